import { describe, expect, it } from 'vitest';
import type * as HLS from 'hls-parser';
import { getLadder, LADDER_NAMES } from '../../origin/ladder.ts';
import { buildMasterPlaylist, buildMediaPlaylist, HLS_VERSION, parsePlaylist, segmentFileName, targetDuration } from '../../origin/playlists.ts';
import { buildCatalog, parseCatalog, sameCatalogContent, serializeCatalog, syntheticTitle, titleId } from '../../origin/catalog.ts';
import { segmentDurations, segmentSizes } from '../../origin/synthetic.ts';
import { syntheticObjects } from '../../origin/seed.ts';
import { ErrorCodes, isOcdnError } from '../../common/errors.ts';

function master(text: string): HLS.types.MasterPlaylist {
  const p = parsePlaylist(text);
  if (!p.isMasterPlaylist) throw new Error('expected a master playlist');
  return p;
}
function media(text: string): HLS.types.MediaPlaylist {
  const p = parsePlaylist(text);
  if (p.isMasterPlaylist) throw new Error('expected a media playlist');
  return p;
}

describe('ladders', () => {
  it('apple is the H.264 16:9 table of the HLS authoring spec, ascending', () => {
    const apple = getLadder('apple');
    expect(apple.map((r) => [r.bitrate / 1000, `${r.width}x${r.height}`])).toEqual([
      [145, '416x234'],
      [365, '640x360'],
      [730, '768x432'],
      [1100, '768x432'],
      [2000, '960x540'],
      [3000, '1280x720'],
      [4500, '1280x720'],
      [6000, '1920x1080'],
      [7800, '1920x1080'],
    ]);
    expect(apple.map((r) => r.name)).toEqual(['145k', '365k', '730k', '1100k', '2000k', '3000k', '4500k', '6000k', '7800k']);
    for (const r of apple) expect(r.codecs).toMatch(/^avc1\.6400(1e|1f|28),mp4a\.40\.2$/);
    expect(apple.at(-1)!.codecs).toBe('avc1.640028,mp4a.40.2'); // 1080p needs level 4.0
  });

  it('small has three rungs out of the same range; unknown names are a config error', () => {
    expect(getLadder('small').map((r) => r.name)).toEqual(['365k', '1100k', '3000k']);
    expect(LADDER_NAMES).toEqual(['apple', 'small']);
    const err = (() => {
      try {
        getLadder('huge');
      } catch (e) {
        return e;
      }
    })();
    expect(isOcdnError(err, ErrorCodes.CONFIG)).toBe(true);
  });

  it('getLadder returns a copy, so callers cannot corrupt the preset', () => {
    getLadder('small')[0]!.bitrate = 1;
    expect(getLadder('small')[0]!.bitrate).toBe(365_000);
  });
});

describe('segment timing', () => {
  it('cuts a title into full segments and one shorter last segment', () => {
    expect(segmentDurations(600, 4)).toHaveLength(150);
    expect(segmentDurations(30, 4)).toEqual([4, 4, 4, 4, 4, 4, 4, 2]);
    expect(segmentDurations(10, 6)).toEqual([6, 4]);
    expect(segmentDurations(3, 4)).toEqual([3]);
    expect(segmentDurations(9.5, 2)).toEqual([2, 2, 2, 2, 1.5]);
  });

  it('TARGETDURATION is the largest EXTINF rounded to the nearest integer (RFC 8216 4.3.3.1)', () => {
    expect(targetDuration([4, 4, 2])).toBe(4);
    expect(targetDuration([6.006, 6.006, 1])).toBe(6);
    expect(targetDuration([4.6])).toBe(5);
    expect(targetDuration([0.2])).toBe(1);
  });
});

describe('playlists parse back with hls-parser', () => {
  const ladder = getLadder('apple');
  const titles = [
    syntheticTitle({ id: titleId(1), rank: 1, durationSec: 600, segmentSec: 4, ladder }),
    syntheticTitle({ id: titleId(2), rank: 2, durationSec: 30, segmentSec: 4, ladder }),
    syntheticTitle({ id: titleId(3), rank: 3, durationSec: 61, segmentSec: 6, ladder }),
  ];

  for (const title of titles) {
    it(`${title.id} (${title.durationSec}s, ${title.segmentSec}s segments): every playlist the seeder writes is valid`, async () => {
      const objects = [...syntheticObjects(title, ladder)];
      const playlists = new Map<string, string>();
      for (const o of objects) if (o.key.endsWith('.m3u8')) playlists.set(o.key, (await o.body()).toString('utf8'));
      expect(playlists.size).toBe(1 + ladder.length);

      const m = master(playlists.get(`vod/${title.id}/master.m3u8`)!);
      expect(m.version).toBe(HLS_VERSION);
      expect(m.independentSegments).toBe(true);
      expect(m.variants).toHaveLength(ladder.length);
      const durations = segmentDurations(title.durationSec, title.segmentSec);
      m.variants.forEach((v, i) => {
        const rung = ladder[i]!;
        expect(v.uri).toBe(`${rung.name}/index.m3u8`); // relative
        expect(v.resolution).toEqual({ width: rung.width, height: rung.height });
        expect(v.codecs).toBe(rung.codecs);
        expect(v.averageBandwidth).toBe(rung.bitrate);
        // BANDWIDTH must cover the peak segment bit rate of the rendition.
        const sizes = segmentSizes({
          title: title.id,
          rendition: rung.name,
          bitrate: rung.bitrate,
          durationSec: title.durationSec,
          segmentSec: title.segmentSec,
        });
        const peak = Math.max(...sizes.map((s, k) => (s * 8) / durations[k]!));
        expect(v.bandwidth).toBeGreaterThanOrEqual(peak);
        expect(v.bandwidth).toBeLessThanOrEqual(2 * rung.bitrate);
        expect(v.bandwidth).toBeGreaterThan(v.averageBandwidth!);
      });

      for (const rung of ladder) {
        const text = playlists.get(`vod/${title.id}/${rung.name}/index.m3u8`)!;
        expect(text).toMatch(/^#EXTM3U\n/);
        const p = media(text);
        expect(p.version).toBe(HLS_VERSION);
        expect(p.playlistType).toBe('VOD');
        expect(p.endlist).toBe(true);
        expect(p.targetDuration).toBe(Math.round(title.segmentSec));
        expect(p.segments).toHaveLength(title.segments);
        expect(p.segments.map((s) => s.duration)).toEqual(durations);
        expect(p.segments.reduce((a, s) => a + s.duration, 0)).toBeCloseTo(title.durationSec, 6);
        for (const s of p.segments) expect(Math.round(s.duration)).toBeLessThanOrEqual(p.targetDuration);
        expect(p.segments.map((s) => s.uri)).toEqual(durations.map((_, k) => segmentFileName(k)));
        // The keys the seeder writes are exactly the URIs the playlist names.
        const segKeys = objects.filter((o) => o.key.startsWith(`vod/${title.id}/${rung.name}/seg-`)).map((o) => o.key);
        expect(segKeys).toEqual(p.segments.map((s) => `vod/${title.id}/${rung.name}/${s.uri}`));
      }
    });
  }

  it('media playlists number segments from 0 with 5 digits, and ts by default', () => {
    const p = media(buildMediaPlaylist([4, 4, 1]));
    expect(p.segments.map((s) => s.uri)).toEqual(['seg-00000.ts', 'seg-00001.ts', 'seg-00002.ts']);
    expect(p.mediaSequenceBase ?? 0).toBe(0);
  });

  it('the master lists renditions lowest bandwidth first whatever the input order', () => {
    const r = (name: string, bw: number) => ({ name, bandwidth: bw, averageBandwidth: bw / 2, width: 640, height: 360, codecs: 'avc1.64001e,mp4a.40.2' });
    const m = master(buildMasterPlaylist([r('b', 2_000_000), r('a', 1_000_000)]));
    expect(m.variants.map((v) => v.uri)).toEqual(['a/index.m3u8', 'b/index.m3u8']);
  });

  it('parsePlaylist rejects garbage with BAD_PLAYLIST', () => {
    const err = (() => {
      try {
        parsePlaylist('not a playlist');
      } catch (e) {
        return e;
      }
    })();
    expect(isOcdnError(err, ErrorCodes.BAD_PLAYLIST)).toBe(true);
  });
});

describe('catalog', () => {
  const ladder = getLadder('small');
  const titles = [3, 1, 2].map((n) => syntheticTitle({ id: titleId(n), rank: n, durationSec: 20, segmentSec: 4, ladder }));
  const catalog = buildCatalog('small', titles, new Date('2026-01-01T00:00:00Z'));

  it('lists titles by popularity rank with duration, segments and ladder', () => {
    expect(catalog.version).toBe(1);
    expect(catalog.ladder).toBe('small');
    expect(catalog.titles.map((t) => [t.id, t.popularityRank])).toEqual([
      ['title-0001', 1],
      ['title-0002', 2],
      ['title-0003', 3],
    ]);
    for (const t of catalog.titles) {
      expect(t).toMatchObject({ durationSec: 20, segmentSec: 4, segments: 5, mode: 'synthetic', container: 'ts' });
      expect(t.renditions.map((r) => r.name)).toEqual(['365k', '1100k', '3000k']);
    }
  });

  it('round-trips through JSON and compares equal regardless of generatedAt', () => {
    const back = parseCatalog(serializeCatalog(catalog));
    expect(back).toEqual(catalog);
    expect(sameCatalogContent(back, { ...catalog, generatedAt: new Date().toISOString() })).toBe(true);
    expect(sameCatalogContent(back, { ...catalog, titles: catalog.titles.slice(1) })).toBe(false);
  });

  it('refuses files that are not a catalog', () => {
    for (const text of ['{', '{"version":2,"titles":[]}', '{"version":1,"ladder":"x","titles":[{"id":"t"}]}']) {
      expect(() => parseCatalog(text)).toThrow(/catalog/);
    }
  });
});

import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CATALOG_KEY, type Catalog } from '../../common/contracts.ts';
import { waitFor } from '../../common/http.ts';
import { startEdge, type Edge } from '../../edge/server.ts';
import { parseCatalog, serializeCatalog } from '../../origin/catalog.ts';
import { findFfmpeg } from '../../origin/ffmpeg.ts';
import { importTitle, resolveInside, verifyImportedTitle } from '../../origin/import.ts';
import { OriginReader } from '../../origin/reader.ts';
import { EMBEDDED_CREDENTIALS } from '../../origin/s3-config.ts';
import { createS3Client } from '../../origin/s3-client.ts';
import { startEmbeddedS3, type EmbeddedS3 } from '../../origin/s3-server.ts';
import { readCatalog, seedContent } from '../../origin/seed.ts';
import { fetchCatalogFrom } from '../../player-sim/catalog.ts';
import { runPlayers } from '../../player-sim/runner.ts';
import { MemorySink } from '../../player-sim/sinks.ts';
import { startSteering, type Steering } from '../../steering/server.ts';
import type { QoeEvent } from '../../telemetry/events.ts';
import { cliEnv, runCli } from '../cli-run.ts';
import { TEST_EDGE_KEY } from '../steering/helpers.ts';
import { packageClip } from './clips.ts';

/**
 * `ocdn content import` against the embedded S3 with packages ffmpeg really makes (fMP4 with
 * EXT-X-MAP; one file per rendition with EXT-X-BYTERANGE), then steering + an edge + the
 * player-sim in real mode playing them, tokens on.
 */
const BUCKET = 'ocdn-media';
const SECRET = 'import-test-secret-1';
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function filesOf(dir: string): Promise<string[]> {
  const out = await readdir(dir, { recursive: true, withFileTypes: true });
  return out
    .filter((d) => d.isFile())
    .map((d) => relative(dir, join(d.parentPath, d.name)))
    .sort();
}

async function keysUnder(client: S3Client, prefix: string): Promise<string[]> {
  const page = await client.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: prefix }));
  return (page.Contents ?? []).map((o) => o.Key!).sort();
}

describe('ocdn content import', () => {
  let dir: string;
  let s3: EmbeddedS3;
  let client: S3Client;
  let reader: OriginReader;
  let fmp4Dir: string;
  let rangeDir: string;
  let st: Steering | undefined;
  let edge: Edge | undefined;
  const cli = (args: string[]) =>
    runCli(['content', 'import', ...args, '--s3-endpoint', s3.endpoint, '--no-progress'], cliEnv({ unset: ['OCDN_S3_ENDPOINT', 'OCDN_S3_BUCKET'] }));

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ocdn-import-'));
    s3 = await startEmbeddedS3({ dir: join(dir, 's3'), port: 0, bucket: BUCKET });
    client = createS3Client({ s3Endpoint: s3.endpoint, s3Region: 'us-east-1', forcePathStyle: true, ...EMBEDDED_CREDENTIALS }, { maxAttempts: 1 });
    reader = new OriginReader({ client, bucket: BUCKET, timeoutMs: 5_000, retries: 1, baseBackoffMs: 10 });
    await seedContent({ client, bucket: BUCKET, titles: 2, durationSec: 8, segmentSec: 4, ladder: 'small', concurrency: 4 });
    const ffmpeg = await findFfmpeg();
    fmp4Dir = join(dir, 'fmp4');
    rangeDir = join(dir, 'range');
    await Promise.all([packageClip(ffmpeg, fmp4Dir, 'fmp4', 'master.m3u8'), packageClip(ffmpeg, rangeDir, 'single-file', 'main.m3u8')]);
  }, 60_000);

  afterAll(async () => {
    await edge?.close();
    await st?.close();
    client?.destroy();
    await s3?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('uploads an fMP4 package from a folder (CLI) and registers it after the seeded titles', async () => {
    const r = await cli(['clip-fmp4', '--from-dir', fmp4Dir, '--json']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as { uploaded: number; catalogWritten: boolean; catalogTitles: number };
    expect(out.catalogWritten).toBe(true);
    expect(out.catalogTitles).toBe(3);

    const catalog = (await readCatalog(client, BUCKET))!;
    expect(catalog.titles.map((t) => t.id)).toEqual(['title-0001', 'title-0002', 'clip-fmp4']);
    const t = catalog.titles.find((x) => x.id === 'clip-fmp4')!;
    expect(t).toMatchObject({ mode: 'import', container: 'fmp4', layout: 'segments', popularityRank: 3, segments: 3, segmentSec: 1 });
    expect(t.durationSec).toBeCloseTo(3, 1);
    expect(t.renditions.map((x) => [x.name, x.uri, x.width, x.height])).toEqual([
      ['stream_0', 'stream_0/index.m3u8', 160, 90],
      ['stream_1', 'stream_1/index.m3u8', 96, 54],
    ]);
    for (const x of t.renditions) {
      expect(x.bandwidth).toBeGreaterThan(x.averageBandwidth / 4);
      expect(x.averageBandwidth).toBeGreaterThan(0);
      expect(x.codecs).toMatch(/^avc1\./);
    }

    // Every file of the folder is in the bucket with its SHA-256 in metadata, and listed in hashes.json.
    const files = await filesOf(fmp4Dir);
    expect(files).toContain('stream_0/init_0.mp4'); // ffmpeg suffixes the init name per variant
    expect(await keysUnder(client, 'vod/clip-fmp4/')).toEqual([...files, 'hashes.json'].map((f) => `vod/clip-fmp4/${f}`).sort());
    for (const f of files) {
      const head = await client.send(new HeadObjectCommand({ Bucket: BUCKET, Key: `vod/clip-fmp4/${f}` }));
      expect(head.Metadata?.sha256, f).toBe(sha(await readFile(join(fmp4Dir, f))));
    }
    expect(t.manifest).toMatchObject({ key: 'vod/clip-fmp4/hashes.json', objects: files.length });
    expect(await verifyImportedTitle(client, BUCKET, t)).toEqual([]);

    // Re-importing the same package writes nothing, not even catalog.json.
    const again = await cli(['clip-fmp4', '--from-dir', fmp4Dir, '--json']);
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ uploaded: 0, catalogWritten: false });
  });

  it('registers a byte-range package already in the bucket under another master name: hashes added, master.m3u8 made', async () => {
    // Uploaded by someone else's tool: no sha256 metadata.
    const files = await filesOf(rangeDir);
    expect(files).toEqual(['main.m3u8', 'stream_0/data.ts', 'stream_0/index.m3u8', 'stream_1/data.ts', 'stream_1/index.m3u8']);
    for (const f of files) await client.send(new PutObjectCommand({ Bucket: BUCKET, Key: `vod/clip-range/${f}`, Body: await readFile(join(rangeDir, f)) }));

    const res = await importTitle({ client, bucket: BUCKET, title: 'clip-range', master: 'main.m3u8' });
    expect(res.title).toMatchObject({ mode: 'import', container: 'ts', layout: 'byterange', popularityRank: 4, segments: 3 });
    expect(res.title.renditions.map((r) => r.uri)).toEqual(['stream_0/index.m3u8', 'stream_1/index.m3u8']);
    const master = await client.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'vod/clip-range/master.m3u8' }));
    expect(await master.Body!.transformToString()).toBe(await readFile(join(rangeDir, 'main.m3u8'), 'utf8'));
    for (const f of files) {
      const head = await client.send(new HeadObjectCommand({ Bucket: BUCKET, Key: `vod/clip-range/${f}` }));
      expect(head.Metadata?.sha256, f).toBe(sha(await readFile(join(rangeDir, f))));
    }
    expect(await verifyImportedTitle(client, BUCKET, res.title)).toEqual([]);
    const catalog = (await readCatalog(client, BUCKET))!;
    expect(catalog.titles.map((t) => t.id)).toEqual(['title-0001', 'title-0002', 'clip-fmp4', 'clip-range']);

    // Bytes changed behind the packager are found by the manifest.
    const tampered = { ...res.title, manifest: { ...res.title.manifest!, sha256: '0'.repeat(64) } };
    expect((await verifyImportedTitle(client, BUCKET, tampered))[0]).toMatch(/does not hash to the catalog/);
  });

  it('steering answers for the imported titles, /v1/catalog lists them, and the player-sim plays both through an edge', async () => {
    st = await startSteering({
      edgeKey: TEST_EDGE_KEY,
      port: 0,
      tokenSecret: SECRET,
      tokenTtlSec: 600,
      origin: reader,
      registry: { heartbeatIntervalMs: 250, missedHeartbeats: 4, probeIntervalMs: 200, probeTimeoutMs: 1_000, rise: 1, fall: 3 },
    });
    await st.catalog.refresh();
    edge = await startEdge({
      edgeKey: TEST_EDGE_KEY,
      id: 'edge-i',
      port: 0,
      region: 'us-east',
      capacityBytes: 64_000_000,
      origin: reader,
      steeringUrl: st.url,
      tokenSecret: SECRET,
      heartbeatIntervalMs: 100,
    });
    await waitFor(() => st!.registry.counts().up === 1, { timeoutMs: 15_000, what: 'edge registered' });

    for (const id of ['clip-fmp4', 'clip-range']) {
      const r = await request(`${st.url}/v1/steer?title=${id}`);
      expect(r.statusCode, await r.body.text()).toBe(200);
    }
    const catalog = await fetchCatalogFrom({ steering: st.url });
    const byId = new Map(catalog.titles.map((t) => [t.id, t]));
    expect(byId.get('clip-fmp4')).toMatchObject({
      container: 'fmp4',
      layout: 'segments',
      renditions: [{ uri: 'stream_0/index.m3u8' }, { uri: 'stream_1/index.m3u8' }],
    });
    expect(byId.get('clip-range')).toMatchObject({ container: 'ts', layout: 'byterange' });
    expect(byId.get('title-0001')).toMatchObject({ mode: 'synthetic', container: 'ts' });

    for (const id of ['clip-fmp4', 'clip-range']) {
      const sink = new MemorySink();
      const urls: string[] = [];
      const { sessions, summary } = await runPlayers({
        steering: st.url,
        wrapTransport: (t) => ({ fetch: (req) => (urls.push(req.url), t.fetch(req)) }),
        players: 1,
        loop: false,
        speed: 4,
        durationMs: 60_000,
        startTimeoutMs: 60_000,
        requestTimeoutMs: 20_000,
        network: 'const:5mbps',
        titles: id,
        watchMeanS: 'full',
        sink,
      });
      expect(summary.startFailures).toBe(0);
      expect(sessions[0]!.errors).toEqual([]);
      expect(sessions[0]!.exitReason).toBe('completed');
      expect(sessions[0]!.playedS).toBeCloseTo(byId.get(id)!.durationSec, 1);
      const segs = sink.events.filter((e): e is Extract<QoeEvent, { type: 'segment' }> => e.type === 'segment');
      expect(segs.length).toBe(3);
      expect(segs.every((e) => e.edgeId === 'edge-i' && e.bytes > 0)).toBe(true);
      if (id === 'clip-fmp4') expect(urls.some((u) => /\/init_0\.mp4$/.test(new URL(u).pathname))).toBe(true);
      else expect(urls.every((u) => !/\.m4s$/.test(new URL(u).pathname))).toBe(true);
    }
  }, 90_000);

  it('a catalog write that lands over ours (a seed that read before we wrote) is caught by the read-back: both kept', async () => {
    const pkg = join(dir, 'tiny');
    await mkdir(join(pkg, 'v'), { recursive: true });
    await writeFile(join(pkg, 'master.m3u8'), '#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=100000\nv/index.m3u8\n');
    await writeFile(join(pkg, 'v/index.m3u8'), '#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\na.ts\n#EXT-X-ENDLIST\n');
    await writeFile(join(pkg, 'v/a.ts'), Buffer.alloc(1000, 7));
    const before = (await readCatalog(client, BUCKET))!;
    const rival: Catalog = { ...before, titles: [...before.titles, { ...before.titles[0]!, id: 'title-0099', popularityRank: 99 }] };
    // A second client, as a concurrent seed would be: right after our first catalog PUT it writes
    // what it built from the catalog it read before, which lacks our title.
    const other = createS3Client({ s3Endpoint: s3.endpoint, s3Region: 'us-east-1', forcePathStyle: true, ...EMBEDDED_CREDENTIALS }, { maxAttempts: 1 });
    let raced = false;
    client.middlewareStack.add(
      (next, context) => async (args) => {
        const out = await next(args);
        const input = args.input as { Key?: string };
        if (!raced && context.commandName === 'PutObjectCommand' && input.Key === CATALOG_KEY) {
          raced = true;
          await other.send(new PutObjectCommand({ Bucket: BUCKET, Key: CATALOG_KEY, Body: serializeCatalog(rival) }));
        }
        return out;
      },
      { step: 'initialize', name: 'raceCatalog' },
    );
    try {
      await importTitle({ client, bucket: BUCKET, title: 'tiny', fromDir: pkg, rank: 1 });
    } finally {
      client.middlewareStack.remove('raceCatalog');
      other.destroy();
    }
    expect(raced).toBe(true);
    const after = (await readCatalog(client, BUCKET))!;
    expect(after.titles.map((t) => t.id)).toEqual(expect.arrayContaining(['tiny', 'title-0099', 'clip-fmp4', 'clip-range']));
    expect(after.titles.find((t) => t.id === 'tiny')!.popularityRank).toBe(1);
  });

  describe('refusals', () => {
    async function badPackage(name: string, master: string, media: Record<string, string>): Promise<string> {
      const pkg = join(dir, name);
      await mkdir(pkg, { recursive: true });
      await writeFile(join(pkg, 'master.m3u8'), master);
      for (const [p, text] of Object.entries(media)) {
        await mkdir(join(pkg, p, '..'), { recursive: true });
        await writeFile(join(pkg, p), text);
      }
      return pkg;
    }
    const mediaOf = (...uris: string[]) => `#EXTM3U\n#EXT-X-TARGETDURATION:1\n${uris.map((u) => `#EXTINF:1.0,\n${u}\n`).join('')}#EXT-X-ENDLIST\n`;

    it('absolute, root-relative and ../ URIs are refused, each named with the reason, and nothing is written', async () => {
      const pkg = await badPackage(
        'bad-uris',
        '#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=100000\nhttp://evil.example/x.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=200000\nv/index.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=300000\n/vod/other/index.m3u8\n',
        { 'v/index.m3u8': mediaOf('ok.ts', '../../title-0001/365k/seg-00000.ts') },
      );
      await writeFile(join(pkg, 'v/ok.ts'), 'x');
      const r = await cli(['bad', '--from-dir', pkg]);
      expect(r.code).toBe(1);
      const lines = r.stderr.split('\n').filter((l) => l.trim() !== '');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(/E_BAD_PLAYLIST: refusing to import bad: 3 problems/);
      expect(lines[0]).toContain('master.m3u8: "http://evil.example/x.m3u8" (absolute URL');
      expect(lines[0]).toContain('master.m3u8: "/vod/other/index.m3u8" (root-relative');
      expect(lines[0]).toContain('v/index.m3u8: "../../title-0001/365k/seg-00000.ts" (escapes the title folder with ..)');
      expect(await keysUnder(client, 'vod/bad/')).toEqual([]);
      expect((await readCatalog(client, BUCKET))!.titles.some((t) => t.id === 'bad')).toBe(false);
    });

    it('missing objects and byte ranges past the end of their file are refused, listed', async () => {
      const pkg = await badPackage('bad-missing', '#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=100000\nv/index.m3u8\n', {
        'v/index.m3u8': '#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\n#EXT-X-BYTERANGE:500@0\nall.ts\n#EXTINF:1.0,\nnope.ts\n#EXT-X-ENDLIST\n',
      });
      await writeFile(join(pkg, 'v/all.ts'), Buffer.alloc(100));
      await expect(importTitle({ client, bucket: BUCKET, title: 'bad2', fromDir: pkg })).rejects.toThrow(
        /v\/nope\.ts: missing from .*; v\/index\.m3u8 segment 0 → v\/all\.ts: byte range 500@0 past the end of the 100-byte file/,
      );
      expect(await keysUnder(client, 'vod/bad2/')).toEqual([]);
    });

    it('a title id or --master outside the allowed names is a usage error before S3 is touched', async () => {
      const r = await cli(['../x', '--from-dir', fmp4Dir]);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/E_CONFIG: title "\.\.\/x" must be/);
      const m = await cli(['ok', '--from-dir', fmp4Dir, '--master', 'sub/master.m3u8']);
      expect(m.code).toBe(2);
      expect(m.stderr).toMatch(/--master "sub\/master.m3u8" must be a .m3u8 file name at the top of the package/);
    });
  });
});

describe('parseCatalog: the fields imports add', () => {
  const base = (extra: Record<string, unknown>, rendition: Record<string, unknown> = {}) =>
    JSON.stringify({
      version: 1,
      generatedAt: '',
      ladder: 'import',
      titles: [
        {
          id: 'c',
          durationSec: 3,
          segmentSec: 1,
          segments: 3,
          popularityRank: 1,
          mode: 'import',
          container: 'fmp4',
          renditions: [{ name: 'v', bandwidth: 1, averageBandwidth: 1, width: 0, height: 0, codecs: '', ...rendition }],
          ...extra,
        },
      ],
    });
  it('accepts a well-formed import entry and refuses URIs out of the title, a foreign manifest, an unknown layout', () => {
    expect(
      parseCatalog(base({ layout: 'byterange', manifest: { key: 'vod/c/hashes.json', sha256: 'a'.repeat(64), objects: 1, bytes: 1 } }, { uri: 'v/index.m3u8' }))
        .titles,
    ).toHaveLength(1);
    expect(() => parseCatalog(base({}, { uri: '../other/index.m3u8' }))).toThrow(/not a relative path inside the title/);
    expect(() => parseCatalog(base({}, { uri: 'https://evil/x.m3u8' }))).toThrow(/not a relative path inside the title/);
    expect(() => parseCatalog(base({ manifest: { key: 'vod/other/hashes.json', sha256: 'a'.repeat(64) } }))).toThrow(/manifest must be/);
    expect(() => parseCatalog(base({ layout: 'tape' }))).toThrow(/layout must be/);
  });
});

describe('resolveInside', () => {
  it('keeps relative paths inside the title and says why others are refused', () => {
    expect(resolveInside('seg.ts', 'v/index.m3u8')).toEqual({ path: 'v/seg.ts' });
    expect(resolveInside('../a/./b.ts', 'v/index.m3u8')).toEqual({ path: 'a/b.ts' });
    expect(resolveInside('https://cdn/x.ts', 'v/index.m3u8')).toMatchObject({ reason: expect.stringMatching(/absolute URL/) });
    expect(resolveInside('//cdn/x.ts', 'v/index.m3u8')).toMatchObject({ reason: expect.stringMatching(/another host/) });
    expect(resolveInside('/x.ts', 'v/index.m3u8')).toMatchObject({ reason: expect.stringMatching(/root-relative/) });
    expect(resolveInside('../../x.ts', 'v/index.m3u8')).toMatchObject({ reason: expect.stringMatching(/escapes/) });
    expect(resolveInside('a%2f..%2fb.ts', 'index.m3u8')).toMatchObject({ reason: expect.stringMatching(/percent/) });
    expect(resolveInside('x.ts?sig=1', 'index.m3u8')).toMatchObject({ reason: expect.stringMatching(/query/) });
  });
});

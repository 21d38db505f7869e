import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../common/http.ts';
import { parseCmsdDynamic, parseCmsdStatic } from '../../edge/cmsd.ts';
import { startEdge, type Edge } from '../../edge/server.ts';
import { CMSD_STATIC_META } from '../../origin/cmsd-static.ts';
import { getLadder } from '../../origin/ladder.ts';
import { seedContent } from '../../origin/seed.ts';
import { BUCKET, GatedReader, get, startOrigin, type TestOrigin } from './helpers.ts';

const TITLE = 'title-0001';
const RUNG = getLadder('small')[0]!; // 365k
const seg = (i: number) => `/vod/${TITLE}/${RUNG.name}/seg-${String(i).padStart(5, '0')}.ts`;
const MEDIA = `/vod/${TITLE}/${RUNG.name}/index.m3u8`;
const MASTER = `/vod/${TITLE}/master.m3u8`;

/** The last CMSD-Dynamic item of a response: this edge's. */
const lastItem = (h: Record<string, string>) => parseCmsdDynamic(h['cmsd-dynamic'] ?? '').at(-1);

describe('CMSD parsers', () => {
  it('read the CTA-5006 examples', () => {
    expect(parseCmsdDynamic('"CDNB-3ak1";etp=96;rtt=8, "CDNA-312.663";etp=115;rtt=16;mb=5000')).toEqual([
      { value: 'CDNB-3ak1', params: { etp: 96, rtt: 8 } },
      { value: 'CDNA-312.663', params: { etp: 115, rtt: 16, mb: 5000 } },
    ]);
    expect(parseCmsdDynamic('"e-1";du')[0]!.params).toEqual({ du: true });
    expect(parseCmsdStatic('ot=v,sf=h,st=v,d=5000,br=2000,n="OriginProviderA",su')).toEqual({
      ot: 'v',
      sf: 'h',
      st: 'v',
      d: 5000,
      br: 2000,
      n: 'OriginProviderA',
      su: true,
    });
    expect(parseCmsdStatic('nor="a\\"b"').nor).toBe('a"b');
  });

  it('refuse malformed fields', () => {
    expect(() => parseCmsdDynamic('"unterminated;etp=1')).toThrow(SyntaxError);
    expect(() => parseCmsdDynamic('"a";etp=1,')).toThrow(SyntaxError);
    expect(() => parseCmsdStatic('Ot=v')).toThrow(SyntaxError);
  });
});

describe('CMSD on edge answers', () => {
  let origin: TestOrigin;
  let edge: Edge;
  let shield: Edge;
  let child: Edge;

  const stored = async (path: string): Promise<string | undefined> =>
    (await origin.client.send(new HeadObjectCommand({ Bucket: BUCKET, Key: path.slice(1) }))).Metadata?.[CMSD_STATIC_META];

  beforeAll(async () => {
    origin = await startOrigin();
    await seedContent({ client: origin.client, bucket: BUCKET, titles: 1, durationSec: 12, segmentSec: 4, ladder: [RUNG], concurrency: 4 });
    edge = await startEdge({ id: 'edge-c', region: 'r', capacityBytes: 20_000_000, origin: origin.reader, tokenSecret: null });
    shield = await startEdge({ id: 'shield-c', region: 'r', capacityBytes: 20_000_000, origin: origin.reader, tokenSecret: null });
    child = await startEdge({ id: 'child-c', region: 'r', capacityBytes: 20_000_000, parentUrl: shield.url, tokenSecret: null });
  });

  afterAll(async () => {
    await child?.close();
    await shield?.close();
    await edge?.close();
    await origin?.close();
  });

  it('the packager stores CMSD-Static per object: segments with ot, br, d, st and the next object', async () => {
    expect(parseCmsdStatic((await stored(seg(0)))!)).toEqual({ ot: 'av', sf: 'h', st: 'v', br: 365, d: 4000, nor: 'seg-00001.ts' });
    expect(parseCmsdStatic((await stored(seg(2)))!)).toEqual({ ot: 'av', sf: 'h', st: 'v', br: 365, d: 4000 });
    expect(parseCmsdStatic((await stored(MEDIA))!)).toEqual({ ot: 'm', sf: 'h', st: 'v' });
  });

  it('a miss and a hit carry the stored CMSD-Static and a CMSD-Dynamic naming this edge with its etp', async () => {
    // The first answer ever has no throughput sample yet: warm up on a playlist until one exists.
    const warm = await waitFor(
      async () => {
        const r = await get(`${edge.url}${MEDIA}`);
        return typeof lastItem(r.headers)?.params.etp === 'number' ? r : undefined;
      },
      { timeoutMs: 5_000, what: 'an etp sample' },
    );
    expect(parseCmsdStatic(warm.headers['cmsd-static']!).ot).toBe('m');

    const want = await stored(seg(0));
    const miss = await get(`${edge.url}${seg(0)}`);
    expect(miss.status).toBe(200);
    expect(miss.headers['x-cache']).toBe('MISS');
    const hit = await get(`${edge.url}${seg(0)}`);
    expect(hit.headers['x-cache']).toBe('HIT');
    for (const r of [miss, hit]) {
      expect(r.headers['cmsd-static']).toBe(want);
      const items = parseCmsdDynamic(r.headers['cmsd-dynamic']!);
      expect(items).toHaveLength(1);
      expect(items[0]!.value).toBe('edge-c');
      expect(items[0]!.params.etp).toEqual(expect.any(Number));
      expect(items[0]!.params.etp as number).toBeGreaterThan(0);
      expect(items[0]!.params.du).toBeUndefined();
    }
    // A Range answer of a hit carries them too.
    const part = await get(`${edge.url}${seg(0)}`, { range: 'bytes=0-99' });
    expect(part.status).toBe(206);
    expect(part.headers['cmsd-static']).toBe(want);
    expect(lastItem(part.headers)?.value).toBe('edge-c');
  });

  it('a playlist says ot=m, master and media alike', async () => {
    for (const path of [MASTER, MEDIA]) {
      const r = await get(`${edge.url}${path}`);
      expect(parseCmsdStatic(r.headers['cmsd-static']!)).toEqual({ ot: 'm', sf: 'h', st: 'v' });
    }
  });

  it('through a shield, a miss lists the shield first and the edge last; Static passes both tiers unchanged', async () => {
    const want = await stored(seg(1));
    const miss = await get(`${child.url}${seg(1)}`);
    expect(miss.headers['x-cache']).toBe('MISS');
    expect(miss.headers['cmsd-static']).toBe(want);
    expect(parseCmsdDynamic(miss.headers['cmsd-dynamic']!).map((i) => i.value)).toEqual(['shield-c', 'child-c']);
    // A hit at the child involved no other server: one item, the child's.
    const hit = await get(`${child.url}${seg(1)}`);
    expect(hit.headers['x-cache']).toBe('HIT');
    expect(hit.headers['cmsd-static']).toBe(want);
    expect(parseCmsdDynamic(hit.headers['cmsd-dynamic']!).map((i) => i.value)).toEqual(['child-c']);
  });

  it('a browser-grade fetch reads both headers (exposed by CORS)', async () => {
    const res = await fetch(`${edge.url}${seg(2)}`, { headers: { origin: 'https://player.example' } });
    await res.arrayBuffer();
    expect(res.status).toBe(200);
    const exposed = (res.headers.get('access-control-expose-headers') ?? '').toLowerCase();
    expect(exposed).toContain('cmsd-static');
    expect(exposed).toContain('cmsd-dynamic');
    expect(res.headers.get('cmsd-static')).toBe(await stored(seg(2)));
    expect(parseCmsdDynamic(res.headers.get('cmsd-dynamic')!).at(-1)!.value).toBe('edge-c');
  });

  it('an edge with more requests waiting on upstream than its threshold says du, and stops once they are done', async () => {
    const reader = new GatedReader({ client: origin.client, bucket: BUCKET, timeoutMs: 10_000, retries: 0 });
    const busy = await startEdge({ id: 'edge-du', region: 'r', capacityBytes: 20_000_000, origin: reader, tokenSecret: null, duressInFlight: 1 });
    try {
      reader.release();
      expect((await get(`${busy.url}${MEDIA}`)).status).toBe(200); // cached, for hits below
      reader.reset();
      const pending = [seg(0), seg(1), seg(2)].map((p) => get(`${busy.url}${p}`));
      await waitFor(() => busy.inFlight === 3, { timeoutMs: 10_000, what: '3 requests waiting on the origin' });
      // While they wait, hits say du too (their prebuilt item is refreshed within ~250 ms).
      await waitFor(async () => lastItem((await get(`${busy.url}${MEDIA}`)).headers)?.params.du === true, { timeoutMs: 5_000, what: 'du on a hit' });
      reader.release();
      const answers = await Promise.all(pending);
      for (const r of answers) expect(r.status).toBe(200);
      // The first miss answered saw all three waiting; later ones may see fewer.
      expect(answers.some((r) => lastItem(r.headers)?.params.du === true)).toBe(true);
      await waitFor(() => busy.inFlight === 0, { timeoutMs: 5_000, what: 'no request in flight' });
      // Hits use the prebuilt item, refreshed within ~250 ms: it loses du.
      const calm = await waitFor(
        async () => {
          const r = await get(`${busy.url}${MEDIA}`);
          return lastItem(r.headers)?.params.du === undefined ? r : undefined;
        },
        { timeoutMs: 5_000, what: 'du gone' },
      );
      expect(calm.headers['x-cache']).toBe('HIT');
    } finally {
      reader.release();
      await busy.close();
    }
  });
});

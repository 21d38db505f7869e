import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signPath, withPathToken, withToken } from '../../common/token.ts';
import { startEdge, type Edge } from '../../edge/server.ts';
import { bytes, get, metric, rawGet, sha256, startOrigin, type TestOrigin } from './helpers.ts';
import { expectErrorBody } from '../error-body.ts';
import { TEST_EDGE_KEY } from '../steering/helpers.ts';

const SECRET = 'test-secret-0123456789';
const future = () => Math.floor(Date.now() / 1000) + 600;

describe('edge serving from the embedded S3', () => {
  let origin: TestOrigin;
  let edge: Edge;
  let open: Edge; // tokens off
  const logLines: Record<string, unknown>[] = [];
  const seg = bytes(150_000, 7);
  const seg2 = bytes(70_000, 8);
  const playlist = '#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.0,\nseg-00000.ts\n#EXT-X-ENDLIST\n';
  const signed = (path: string) => withPathToken(edge.url, path, signPath(SECRET, path, future()));

  beforeAll(async () => {
    origin = await startOrigin();
    await origin.put('vod/t1/730k/seg-00000.ts', seg, 'application/octet-stream');
    await origin.put('vod/t1/730k/seg-00001.ts', seg2);
    await origin.put('vod/t1/730k/index.m3u8', playlist);
    await origin.put('vod/t1/730k/init.mp4', bytes(1_000, 9));
    await origin.put('vod/t1/730k/seg-00002.m4s', bytes(2_000, 10));
    await origin.put('vod/t2/730k/seg-00000.ts', bytes(10_000, 11));
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const line of chunk.toString('utf8').split('\n')) if (line) logLines.push(JSON.parse(line) as Record<string, unknown>);
        cb();
      },
    });
    edge = await startEdge({
      edgeKey: TEST_EDGE_KEY,
      id: 'edge-1',
      region: 'us-east',
      capacityBytes: 10_000_000,
      origin: origin.reader,
      tokenSecret: SECRET,
      log: pino({ level: 'info' }, sink),
    });
    open = await startEdge({
      edgeKey: TEST_EDGE_KEY,
      id: 'edge-open',
      region: 'us-east',
      capacityBytes: 10_000_000,
      origin: origin.reader,
      tokenSecret: null,
      negativeTtlMs: 60_000,
    });
  });

  afterAll(async () => {
    await edge?.close();
    await open?.close();
    await origin?.close();
  });

  it('misses, then hits, with the cache headers and the S3 bytes', async () => {
    const path = '/vod/t1/730k/seg-00000.ts';
    const first = await get(signed(path));
    expect(first.status).toBe(200);
    expect(first.body.equals(seg)).toBe(true);
    expect(first.headers['x-cache']).toBe('MISS');
    expect(first.headers['cache-status']).toBe('ocdn-edge-1; fwd=miss; stored');
    expect(first.headers['x-edge-id']).toBe('edge-1');
    expect(first.headers.etag).toBe(`"${sha256(seg)}"`);
    expect(first.headers['content-type']).toBe('video/mp2t');
    expect(first.headers['content-length']).toBe(String(seg.length));
    expect(first.headers['accept-ranges']).toBe('bytes');
    expect(first.headers['cache-control']).toMatch(/max-age=3600/);
    expect(first.headers.age).toBe('0');

    const second = await get(signed(path));
    expect(second.status).toBe(200);
    expect(second.body.equals(seg)).toBe(true);
    expect(second.headers['x-cache']).toBe('HIT');
    expect(second.headers['cache-status']).toBe('ocdn-edge-1; hit');
    expect(second.headers.etag).toBe(first.headers.etag);
    expect(Number(second.headers.age)).toBeGreaterThanOrEqual(0);
    expect(await metric(edge, 'ocdn_edge_requests_total', { cache: 'HIT', status: '200' })).toBeGreaterThanOrEqual(1);
  });

  it('serves HEAD with the headers and no body', async () => {
    const path = '/vod/t1/730k/seg-00001.ts';
    await get(signed(path));
    const head = await get(signed(path), {}, 'HEAD');
    expect(head.status).toBe(200);
    expect(head.headers['content-length']).toBe(String(seg2.length));
    expect(head.headers['x-cache']).toBe('HIT');
    expect(head.body.length).toBe(0);
  });

  it('answers ranges with 206 from the cache, and a ranged miss with one whole-object fetch', async () => {
    const path = '/vod/t1/730k/seg-00001.ts';
    const before = await metric(open, 'ocdn_edge_origin_fetches_total');
    const miss = await get(`${open.url}${path}`, { range: 'bytes=100-199' });
    expect(miss.status).toBe(206);
    expect(miss.headers['x-cache']).toBe('MISS');
    expect(miss.headers['content-range']).toBe(`bytes 100-199/${seg2.length}`);
    expect(miss.headers['content-length']).toBe('100');
    expect(miss.body.equals(seg2.subarray(100, 200))).toBe(true);
    const tail = await get(`${open.url}${path}`, { range: 'bytes=-50' });
    expect(tail.status).toBe(206);
    expect(tail.headers['x-cache']).toBe('HIT');
    expect(tail.body.equals(seg2.subarray(seg2.length - 50))).toBe(true);
    const open2 = await get(`${open.url}${path}`, { range: `bytes=${seg2.length - 10}-` });
    expect(open2.body.equals(seg2.subarray(seg2.length - 10))).toBe(true);
    expect(await metric(open, 'ocdn_edge_origin_fetches_total')).toBe(before + 1);

    const bad = await get(`${open.url}${path}`, { range: `bytes=${seg2.length}-` });
    expect(bad.status).toBe(416);
    expect(bad.headers['content-range']).toBe(`bytes */${seg2.length}`);
    expectErrorBody(bad.body, 'E_RANGE_NOT_SATISFIABLE', /outside the \d+-byte object/);
    const multi = await get(`${open.url}${path}`, { range: 'bytes=0-1,4-5' });
    expect(multi.status).toBe(200);
    expect(multi.body.equals(seg2)).toBe(true);
    const staleIfRange = await get(`${open.url}${path}`, { range: 'bytes=0-9', 'if-range': '"not-the-etag"' });
    expect(staleIfRange.status).toBe(200);
    const goodIfRange = await get(`${open.url}${path}`, { range: 'bytes=0-9', 'if-range': `"${sha256(seg2)}"` });
    expect(goodIfRange.status).toBe(206);
  });

  it('answers If-None-Match with 304 and no body', async () => {
    const path = '/vod/t1/730k/seg-00000.ts';
    const etag = `"${sha256(seg)}"`;
    const nm = await get(`${open.url}${path}`, { 'if-none-match': etag });
    expect(nm.status).toBe(304);
    expect(nm.body.length).toBe(0);
    expect(nm.headers.etag).toBe(etag);
    expect(nm.headers['cache-control']).toMatch(/max-age/);
    const changed = await get(`${open.url}${path}`, { 'if-none-match': '"something-else"' });
    expect(changed.status).toBe(200);
    expect(changed.body.equals(seg)).toBe(true);
  });

  it('sets Content-Type by extension and short TTLs on playlists', async () => {
    const pl = await get(`${open.url}/vod/t1/730k/index.m3u8`);
    expect(pl.status).toBe(200);
    expect(pl.headers['content-type']).toBe('application/vnd.apple.mpegurl');
    expect(pl.headers['cache-control']).toMatch(/max-age=5\b/);
    expect(pl.body.toString()).toBe(playlist);
    expect((await get(`${open.url}/vod/t1/730k/init.mp4`)).headers['content-type']).toBe('video/mp4');
    expect((await get(`${open.url}/vod/t1/730k/seg-00002.m4s`)).headers['content-type']).toBe('video/mp4');
  });

  it('caches a 404 for a short while (one origin fetch for repeated misses)', async () => {
    const path = '/vod/t1/730k/seg-99999.ts';
    const before = await metric(open, 'ocdn_edge_origin_fetches_total', { result: 'not_found' });
    const a = await get(`${open.url}${path}`);
    expect(a.status).toBe(404);
    expect(a.headers['x-cache']).toBe('MISS');
    expectErrorBody(a.body, 'E_NOT_FOUND', /^not found: \/vod\/t1\/730k\/seg-99999\.ts$/);
    expect(a.headers['content-type']).toBe('application/json; charset=utf-8');
    const b = await get(`${open.url}${path}`);
    expect(b.status).toBe(404);
    expect(b.headers['x-cache']).toBe('HIT');
    expect(b.headers['cache-status']).toContain('detail=negative');
    expectErrorBody(b.body, 'E_NOT_FOUND', /^not found: \/vod\/t1\/730k\/seg-99999\.ts$/);
    expect(await metric(open, 'ocdn_edge_origin_fetches_total', { result: 'not_found' })).toBe(before + 1);
  });

  describe('tokens', () => {
    const path = '/vod/t2/730k/seg-00000.ts';

    it('refuses missing, malformed, expired, forged and other-title tokens with a reason', async () => {
      const inPath = (token: string) => withPathToken(edge.url, path, token);
      const cases: [string, RegExp][] = [
        [`${edge.url}${path}`, /missing token/],
        // Path tokens (what steering issues), then the query form kept for compatibility.
        [inPath('abc'), /malformed token/],
        [inPath(signPath(SECRET, path, Math.floor(Date.now() / 1000) - 10)), /token expired/],
        [inPath(signPath('another-secret', path, future())), /invalid token signature/],
        [inPath(signPath(SECRET, '/vod/t1/x.ts', future())), /invalid token signature/],
        [`${edge.url}/t/`, /malformed path token/],
        [`${edge.url}/t/${future()}.${'0'.repeat(64)}`, /malformed path token/],
        [`${edge.url}/t/a%2Fb/vod/t2/730k/seg-00000.ts`, /malformed path token/],
        [`${edge.url}/t/${'9'.repeat(200)}${path}`, /malformed path token/],
        [`${edge.url}${path}?token=abc`, /malformed token/],
        [withToken(`${edge.url}${path}`, signPath(SECRET, path, Math.floor(Date.now() / 1000) - 10)), /token expired/],
        [withToken(`${edge.url}${path}`, signPath('another-secret', path, future())), /invalid token signature/],
        [withToken(`${edge.url}${path}`, `${future()}.${'0'.repeat(64)}`), /invalid token signature/],
        [withToken(`${edge.url}${path}`, signPath(SECRET, '/vod/t1/x.ts', future())), /invalid token signature/],
      ];
      const fetchesBefore = await metric(edge, 'ocdn_edge_origin_fetches_total');
      for (const [url, why] of cases) {
        const r = await get(url);
        expect(r.status, url).toBe(403);
        expect(r.headers['x-edge-id']).toBe('edge-1');
        expectErrorBody(r.body, 'E_FORBIDDEN', why);
      }
      expect(await metric(edge, 'ocdn_edge_origin_fetches_total')).toBe(fetchesBefore);
      expect(await metric(edge, 'ocdn_edge_requests_total', { cache: 'NONE', status: '403' })).toBeGreaterThanOrEqual(cases.length);
    });

    it('keeps the token out of the cache key: another valid token hits, in the path or the query', async () => {
      const a = await get(withPathToken(edge.url, path, signPath(SECRET, path, future())));
      expect(a.status).toBe(200);
      const b = await get(withPathToken(edge.url, path, signPath(SECRET, path, future() + 100)));
      expect(b.status).toBe(200);
      expect(b.headers['x-cache']).toBe('HIT');
      const c = await get(withToken(`${edge.url}${path}`, signPath(SECRET, path, future() + 200)));
      expect(c.status).toBe(200);
      expect(c.headers['x-cache']).toBe('HIT');
      expect(c.body.equals(a.body)).toBe(true);
    });

    it('strips the path token first, then applies the path allow-list to the rest (400)', async () => {
      const token = signPath(SECRET, path, future());
      const before = await metric(edge, 'ocdn_edge_origin_fetches_total');
      for (const rest of ['/vod/t2/../t1/730k/seg-00000.ts', '/vod/t2/730k/%2e%2e/x.ts', '/etc/passwd', '/vod/t2']) {
        const r = await rawGet(edge.url, `/t/${token}${rest}`);
        expect(r.status, rest).toBe(400);
        expectErrorBody(r.body, 'E_BAD_REQUEST');
      }
      expect(await metric(edge, 'ocdn_edge_origin_fetches_total')).toBe(before);
    });
  });

  it('refuses traversal and odd paths with 400 before touching the origin', async () => {
    const before = await metric(open, 'ocdn_edge_origin_fetches_total');
    const paths = [
      '/vod/../x',
      '/vod/t1/../../etc/passwd',
      '/vod/t1/%2e%2e/%2e%2e/x',
      '/vod/%2e%2e/catalog.json',
      '/vod/t1%2f730k/seg-00000.ts',
      '/vod/t1/730k%2Fseg-00000.ts',
      '/vod/t1/seg%00.ts',
      '/vod/t1/./730k/seg-00000.ts',
      '/vod/t1//seg.ts',
      '/vod/t1/a\\b.ts',
      `/vod/t1/${'a'.repeat(2_000)}.ts`,
      '/vod',
      '/vod%2f..%2fcatalog.json',
    ];
    for (const p of paths) {
      const r = await rawGet(open.url, p);
      expect(r.status, p).toBe(400);
      expectErrorBody(r.body, 'E_BAD_REQUEST');
    }
    expect(await metric(open, 'ocdn_edge_origin_fetches_total')).toBe(before);
    const del = await get(`${open.url}/vod/t1/730k/seg-00000.ts`, {}, 'DELETE');
    expect(del.status).toBe(405);
    expect(del.headers.allow).toBe('GET, HEAD');
    expectErrorBody(del.body, 'E_METHOD', /method DELETE not allowed/);
  });

  it('puts parsed CMCD in the access log and never refuses a request for bad CMCD', async () => {
    const path = '/vod/t1/730k/index.m3u8';
    const cmcd = encodeURIComponent('br=3200,bl=21300,ot=m,sid="sess-42",su');
    const r = await get(`${signed(path)}?CMCD=${cmcd}`);
    expect(r.status).toBe(200);
    const line = logLines.find((l) => l.path === path && l.msg === 'request');
    expect(line).toBeDefined();
    expect(line!.cmcd).toEqual({ br: 3200, bl: 21300, ot: 'm', sid: 'sess-42', su: true });
    expect(line!.status).toBe(200);
    expect(line!.cache).toBe('MISS');
    expect(JSON.stringify(line)).not.toContain('token');

    const p2 = '/vod/t1/730k/init.mp4';
    expect((await get(`${signed(p2)}?CMCD=%ZZ%ZZ`)).status).toBe(200);
    expect((await get(signed(p2), { 'cmcd-request': 'bl="x,,,', 'cmcd-session': 'sid=' })).status).toBe(200);
    const hdr = await get(signed('/vod/t1/730k/seg-00002.m4s'), { 'cmcd-object': 'br=730,ot=v', 'cmcd-session': 'sid="h1"' });
    expect(hdr.status).toBe(200);
    const line2 = logLines.find((l) => l.path === '/vod/t1/730k/seg-00002.m4s');
    expect(line2!.cmcd).toEqual({ br: 730, ot: 'v', sid: 'h1' });
  });

  it('exposes health, readiness and exactly the ocdn_edge_* metrics of the design', async () => {
    expect((await get(`${edge.url}/healthz`)).status).toBe(200);
    const ready = await get(`${edge.url}/readyz`);
    expect(ready.status).toBe(200);
    expect(JSON.parse(ready.body.toString())).toMatchObject({ ready: true, upstream: 's3' });
    const text = (await get(`${edge.url}/metrics`)).body.toString();
    const names = new Set([...text.matchAll(/^# TYPE (ocdn_edge_\w+)/gm)].map((m) => m[1]));
    expect([...names].sort()).toEqual([
      'ocdn_edge_bytes_served_total',
      'ocdn_edge_cache_bytes',
      'ocdn_edge_cache_evictions_total',
      'ocdn_edge_cache_items',
      // beyond DESIGN.md's list: cached 404s live in a capped LRU of their own (issue 12)
      'ocdn_edge_cache_negative_items',
      'ocdn_edge_coalesced_total',
      // beyond DESIGN.md's list: the offload target is in bytes (origin bytes / bytes served)
      'ocdn_edge_origin_bytes_total',
      'ocdn_edge_origin_fetch_seconds',
      'ocdn_edge_origin_fetches_total',
      'ocdn_edge_requests_total',
      // beyond DESIGN.md's list: the upstream concurrency cap (issue 14), and the disk tier's
      // ocdn_edge_disk_* when there is one (not here)
      'ocdn_edge_upstream_active',
      'ocdn_edge_upstream_waiting',
    ]);
    expect(text).toMatch(/ocdn_edge_requests_total\{cache="HIT",status="200",edge="edge-1"\} \d+/);
    expect(Number(/ocdn_edge_bytes_served_total\{edge="edge-1"\} (\d+)/.exec(text)?.[1])).toBeGreaterThan(seg.length);
    expect(Number(/ocdn_edge_cache_bytes\{edge="edge-1"\} (\d+)/.exec(text)?.[1])).toBe(edge.cache.bytes);
    const nope = await get(`${edge.url}/nope`);
    expect(nope.status).toBe(404);
    expectErrorBody(nope.body, 'E_NOT_FOUND', /this edge serves \/vod/);
  });
});

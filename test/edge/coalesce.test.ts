import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../common/http.ts';
import { readMetric } from '../../common/metrics.ts';
import { CACHE_POLICIES } from '../../edge/policies/types.ts';
import { startEdge, type Edge } from '../../edge/server.ts';
import { BUCKET, GatedReader, bytes, get, metric, sha256, startOrigin, type TestOrigin } from './helpers.ts';
import { TEST_EDGE_KEY } from '../steering/helpers.ts';

describe.each(CACHE_POLICIES)('coalescing and the byte bound (%s)', (cachePolicy) => {
  let origin: TestOrigin;
  const edges: Edge[] = [];

  beforeAll(async () => {
    origin = await startOrigin();
  });

  afterAll(async () => {
    await Promise.all(edges.map((e) => e.close()));
    await origin?.close();
  });

  it('200 concurrent requests for one uncached segment make exactly one origin GET, all bodies identical to S3', async () => {
    const body = await origin.put(`vod/hot-${cachePolicy}/730k/seg-00000.ts`, bytes(400_000, 42));
    const reader = new GatedReader({ client: origin.client, bucket: BUCKET, timeoutMs: 10_000, retries: 0 });
    const edge = await startEdge({
      edgeKey: TEST_EDGE_KEY,
      id: 'edge-c',
      region: 'r',
      capacityBytes: 50_000_000,
      origin: reader,
      tokenSecret: null,
      cachePolicy,
    });
    edges.push(edge);
    const url = `${edge.url}/vod/hot-${cachePolicy}/730k/seg-00000.ts`;
    const before = await metric(edge, 'ocdn_edge_origin_fetches_total');

    const all = Array.from({ length: 200 }, () => get(url));
    // Every request is parked on the one upstream fetch before it is allowed to finish.
    await waitFor(() => edge.inFlight === 200, { timeoutMs: 30_000, what: '200 requests in flight' });
    expect(reader.calls).toBe(1);
    reader.release();
    const results = await Promise.all(all);

    expect(await metric(edge, 'ocdn_edge_origin_fetches_total')).toBe(before + 1);
    expect(reader.calls).toBe(1);
    const want = sha256(body);
    for (const r of results) {
      expect(r.status).toBe(200);
      expect(r.body.length).toBe(body.length);
      expect(sha256(r.body)).toBe(want);
      expect(r.headers.etag).toBe(`"${want}"`);
    }
    const byCache = new Map<string, number>();
    for (const r of results) byCache.set(r.headers['x-cache']!, (byCache.get(r.headers['x-cache']!) ?? 0) + 1);
    expect(Object.fromEntries(byCache)).toEqual({ MISS: 1, COALESCED: 199 });
    expect(results.filter((r) => r.headers['cache-status']!.endsWith('; collapsed'))).toHaveLength(199);
    expect(await metric(edge, 'ocdn_edge_coalesced_total')).toBe(199);
    // And afterwards it is a plain hit.
    expect((await get(url)).headers['x-cache']).toBe('HIT');
    expect(await metric(edge, 'ocdn_edge_origin_fetches_total')).toBe(before + 1);
  });

  it('never holds more bytes than its capacity under churn, and keeps serving correct bytes', async () => {
    const capacity = 600_000;
    const objects: { path: string; sha: string; size: number }[] = [];
    for (let i = 0; i < 24; i++) {
      const size = 40_000 + ((i * 7919) % 80_000);
      const b = await origin.put(`vod/churn/r/seg-${String(i).padStart(5, '0')}.ts`, bytes(size, 100 + i));
      objects.push({ path: `/vod/churn/r/seg-${String(i).padStart(5, '0')}.ts`, sha: sha256(b), size });
    }
    const edge = await startEdge({
      edgeKey: TEST_EDGE_KEY,
      id: 'edge-small',
      region: 'r',
      capacityBytes: capacity,
      origin: origin.reader,
      tokenSecret: null,
      cachePolicy,
    });
    edges.push(edge);

    let maxSeen = 0;
    let maxScraped = 0;
    let rng = 12345;
    // High bits of an LCG: its low bits cycle with a tiny period.
    const next = () => Math.floor(((rng = (Math.imul(rng, 1103515245) + 12345) >>> 0) / 2 ** 32) * objects.length);
    const worker = async () => {
      for (let n = 0; n < 40; n++) {
        const o = objects[next()]!;
        const r = await get(`${edge.url}${o.path}`);
        expect(r.status).toBe(200);
        expect(sha256(r.body)).toBe(o.sha);
        maxSeen = Math.max(maxSeen, edge.cache.bytes);
        if (n % 10 === 0) {
          const text = (await get(`${edge.url}/metrics`)).body.toString();
          maxScraped = Math.max(maxScraped, readMetric(text, 'ocdn_edge_cache_bytes'));
        }
      }
    };
    await Promise.all(Array.from({ length: 6 }, worker));

    expect(maxSeen).toBeGreaterThan(capacity / 2); // the cache was actually filled...
    expect(maxSeen).toBeLessThanOrEqual(capacity); // ...and never past its bound
    expect(maxScraped).toBeLessThanOrEqual(capacity);
    expect(await metric(edge, 'ocdn_edge_cache_evictions_total')).toBeGreaterThan(0);
    expect(edge.cache.items).toBeLessThan(objects.length);
    expect(await metric(edge, 'ocdn_edge_origin_fetches_total')).toBeGreaterThan(objects.length);
    expect(await metric(edge, 'ocdn_edge_cache_items')).toBe(edge.cache.items);
  });

  it('caps upstream fetches in flight: distinct misses past the cap wait, holding no body, then all complete', async () => {
    const keys = Array.from({ length: 6 }, (_, i) => `vod/cap-${cachePolicy}/r/seg-${String(i).padStart(5, '0')}.ts`);
    const want = await Promise.all(keys.map((k, i) => origin.put(k, bytes(30_000, 700 + i))));
    const reader = new GatedReader({ client: origin.client, bucket: BUCKET, timeoutMs: 10_000, retries: 0 });
    const edge = await startEdge({
      id: 'edge-cap',
      region: 'r',
      capacityBytes: 50_000_000,
      origin: reader,
      tokenSecret: null,
      cachePolicy,
      upstreamConcurrency: 2,
    });
    edges.push(edge);
    const all = keys.map((k) => get(`${edge.url}/${k}`));
    await waitFor(async () => (await metric(edge, 'ocdn_edge_upstream_waiting')) === 4, { timeoutMs: 10_000, what: '4 fills waiting for a slot' });
    expect(reader.calls).toBe(2);
    expect(await metric(edge, 'ocdn_edge_upstream_active')).toBe(2);
    reader.release();
    const results = await Promise.all(all);
    for (const [i, r] of results.entries()) expect(r.body.equals(want[i]!)).toBe(true);
    expect(reader.calls).toBe(6);
    expect(await metric(edge, 'ocdn_edge_upstream_waiting')).toBe(0);
  });

  it('serves but does not keep an object larger than a quarter of the cache', async () => {
    const big = await origin.put('vod/big/r/seg-00000.ts', bytes(300_000, 5));
    const edge = await startEdge({
      edgeKey: TEST_EDGE_KEY,
      id: 'edge-tiny',
      region: 'r',
      capacityBytes: 1_000_000,
      origin: origin.reader,
      tokenSecret: null,
      cachePolicy,
    });
    edges.push(edge);
    const r = await get(`${edge.url}/vod/big/r/seg-00000.ts`);
    expect(r.status).toBe(200);
    expect(r.body.equals(big)).toBe(true);
    expect(r.headers['cache-status']).toBe('ocdn-edge-tiny; fwd=miss');
    expect(edge.cache.has('/vod/big/r/seg-00000.ts')).toBe(false);
  });
});

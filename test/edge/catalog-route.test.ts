import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../common/http.ts';
import { startEdge, type Edge } from '../../edge/server.ts';
import { parseCatalog, serializeCatalog } from '../../origin/catalog.ts';
import { testCatalog, TEST_EDGE_KEY } from '../steering/helpers.ts';
import { BUCKET, GatedReader, get, metric, rawGet, startOrigin, type TestOrigin } from './helpers.ts';

const SECRET = 'edge-catalog-secret-0123';

describe('edge GET|HEAD /catalog.json', () => {
  let origin: TestOrigin;
  let edge: Edge; // tokens on: the catalog needs none
  const catalogText = serializeCatalog(testCatalog(3));

  beforeAll(async () => {
    origin = await startOrigin();
    edge = await startEdge({
      edgeKey: TEST_EDGE_KEY,
      id: 'edge-cat',
      region: 'us-east',
      capacityBytes: 10_000_000,
      origin: origin.reader,
      tokenSecret: SECRET,
      playlistTtlMs: 7_000,
      negativeTtlMs: 100,
    });
  });
  afterAll(async () => {
    await edge?.close();
    await origin?.close();
  });

  it('answers 404 with a reason while the origin has no catalog, then serves it with the playlist TTL, no token needed', async () => {
    const none = await get(`${edge.url}/catalog.json`);
    expect(none.status).toBe(404);
    expect(none.body.toString()).toMatch(/seed content first/);

    await origin.put('catalog.json', catalogText, 'application/json');
    const first = await waitFor(
      async () => {
        const r = await get(`${edge.url}/catalog.json`);
        return r.status === 200 ? r : undefined;
      },
      { timeoutMs: 5_000, what: 'the catalog once the negative entry expired' },
    );
    expect(first.headers['x-cache']).toBe('MISS');
    expect(first.headers['content-type']).toBe('application/json');
    expect(first.headers['cache-control']).toMatch(/^public, max-age=7, stale-if-error=\d+$/);
    expect(first.headers['x-edge-id']).toBe('edge-cat');
    expect(parseCatalog(first.body.toString('utf8'))).toEqual(testCatalog(3));

    const second = await get(`${edge.url}/catalog.json?anything=1`);
    expect(second.status).toBe(200);
    expect(second.headers['x-cache']).toBe('HIT');
    expect(second.body.toString('utf8')).toBe(catalogText);

    const notModified = await get(`${edge.url}/catalog.json`, { 'if-none-match': first.headers.etag! });
    expect(notModified.status).toBe(304);
    expect(notModified.body.length).toBe(0);

    const part = await get(`${edge.url}/catalog.json`, { range: 'bytes=0-9' });
    expect(part.status).toBe(206);
    expect(part.headers['content-range']).toBe(`bytes 0-9/${Buffer.byteLength(catalogText)}`);
    expect(part.body.toString('utf8')).toBe(catalogText.slice(0, 10));
    expect((await get(`${edge.url}/catalog.json`, { range: 'bytes=999999-' })).status).toBe(416);

    const head = await get(`${edge.url}/catalog.json`, {}, 'HEAD');
    expect(head.status).toBe(200);
    expect(head.headers['content-length']).toBe(String(Buffer.byteLength(catalogText)));
    expect(head.body.length).toBe(0);

    // the catalog names no title: the heartbeat inventory must not grow one
    expect(edge.cache.has('/catalog.json')).toBe(true);
    expect(edge.cache.titles()).toEqual([]);
  });

  it('opens /catalog.json only: other non-/vod paths stay 404, other methods 405', async () => {
    for (const path of ['/catalog.jsonx', '/catalog.json/x', '/catalog', '/other.json', '/catalog.json%00', '/%63atalog.json', '/vod/../catalog.json']) {
      const r = await rawGet(edge.url, path);
      expect(r.status, path).not.toBe(200);
    }
    expect((await rawGet(edge.url, '/other.json')).status).toBe(404);
    const post = await get(`${edge.url}/catalog.json`, {}, 'DELETE');
    expect(post.status).toBe(405);
  });

  it('coalesces concurrent misses into one origin read, like a playlist', async () => {
    const reader = new GatedReader({ client: origin.client, bucket: BUCKET, timeoutMs: 10_000, retries: 0 });
    const gated = await startEdge({
      edgeKey: TEST_EDGE_KEY,
      id: 'edge-gated',
      region: 'us-east',
      capacityBytes: 10_000_000,
      origin: reader,
      tokenSecret: null,
    });
    try {
      const all = Array.from({ length: 20 }, () => get(`${gated.url}/catalog.json`));
      // every request is parked on the one read before it is let through
      await waitFor(() => gated.inFlight === 20, { timeoutMs: 10_000, what: '20 requests in flight' });
      expect(reader.calls).toBe(1);
      reader.release();
      const answers = await Promise.all(all);
      expect(answers.every((r) => r.status === 200 && r.body.toString('utf8') === catalogText)).toBe(true);
      expect(reader.calls).toBe(1);
      const byCache = new Map<string, number>();
      for (const r of answers) byCache.set(r.headers['x-cache']!, (byCache.get(r.headers['x-cache']!) ?? 0) + 1);
      expect(Object.fromEntries(byCache)).toEqual({ MISS: 1, COALESCED: 19 });
      expect(await metric(gated, 'ocdn_edge_coalesced_total')).toBe(19);
      expect(gated.inFlight).toBe(0);
    } finally {
      await gated.close();
    }
  });
});

import { expectErrorBody } from '../error-body.ts';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Catalog } from '../../common/contracts.ts';
import { waitFor } from '../../common/http.ts';
import { serializeCatalog } from '../../origin/catalog.ts';
import { startSteering, type Steering } from '../../steering/server.ts';
import type { TestOrigin } from '../edge/helpers.ts';
import { steeringOnBucket, testCatalog, testTitle, TEST_EDGE_KEY } from './helpers.ts';

async function get(url: string, headers: Record<string, string> = {}, method: 'GET' | 'HEAD' = 'GET') {
  const res = await request(url, { method, headers });
  const text = await res.body.text();
  return { status: res.statusCode, headers: res.headers, text };
}

describe('steering GET /v1/catalog', () => {
  it('serves the static catalog as a Catalog, with an ETag, a max-age and 304 on a match', async () => {
    const catalog: Catalog = { ...testCatalog(0), titles: [testTitle('film-b', 2), testTitle('film-a', 1)] };
    const st = await startSteering({ edgeKey: TEST_EDGE_KEY, port: 0, tokenSecret: null, catalog, registry: { probeIntervalMs: 0, rise: 1 } });
    try {
      const r = await get(`${st.url}/v1/catalog`);
      expect(r.status).toBe(200);
      expect(r.headers['content-type']).toMatch(/^application\/json/);
      expect(JSON.parse(r.text)).toEqual(catalog);
      expect(r.headers['cache-control']).toBe('public, max-age=60');
      const etag = r.headers.etag as string;
      expect(etag).toMatch(/^"[A-Za-z0-9_-]{27}"$/);
      const again = await get(`${st.url}/v1/catalog`, { 'if-none-match': etag });
      expect(again.status).toBe(304);
      expect(again.text).toBe('');
      expect(again.headers.etag).toBe(etag);
      const head = await get(`${st.url}/v1/catalog`, {}, 'HEAD');
      expect(head.status).toBe(200);
      expect(head.text).toBe('');
      expect(Number(head.headers['content-length'])).toBe(Buffer.byteLength(r.text));
      const post = await request(`${st.url}/v1/catalog`, { method: 'POST', body: '{}' });
      await post.body.text();
      expect(post.statusCode).toBe(405);
    } finally {
      await st.close();
    }
  });

  describe('from the bucket', () => {
    let origin: TestOrigin;
    let st: Steering;
    beforeAll(async () => {
      ({ origin, st } = await steeringOnBucket(3_000));
    });
    afterAll(async () => {
      await st?.close();
      await origin?.close();
    });

    it('answers 503 with the reason before a catalog is loaded, then the catalog, max-age its refresh interval', async () => {
      const none = await get(`${st.url}/v1/catalog`);
      expect(none.status).toBe(503);
      expect(none.headers['retry-after']).toBe('1');
      expectErrorBody(none.text, 'E_NOT_READY', /title catalog unavailable/);

      const seeded = testCatalog(4);
      await origin.put('catalog.json', serializeCatalog(seeded), 'application/json');
      const r = await waitFor(
        async () => {
          const x = await get(`${st.url}/v1/catalog`);
          return x.status === 200 ? x : undefined;
        },
        { timeoutMs: 10_000, what: 'steering to load the catalog' },
      );
      expect(JSON.parse(r.text)).toEqual(seeded);
      expect(r.headers['cache-control']).toBe('public, max-age=3');
      // a refresh that reads the same catalog keeps the ETag
      const etag = r.headers.etag;
      await st.catalog.refresh();
      expect((await get(`${st.url}/v1/catalog`)).headers.etag).toBe(etag);
    });
  });
});

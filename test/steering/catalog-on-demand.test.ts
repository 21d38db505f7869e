import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { serializeCatalog } from '../../origin/catalog.ts';
import type { Steering } from '../../steering/server.ts';
import { expectErrorBody } from '../error-body.ts';
import type { TestOrigin } from '../edge/helpers.ts';
import { heartbeat, signedHeaders, steeringOnBucket, testCatalog } from './helpers.ts';

async function get(url: string) {
  const res = await request(url);
  return { status: res.statusCode, text: await res.body.text() };
}

// "ocdn content seed" then "ocdn steer" at once (the README tour): the first request for a title
// seeded a moment ago must find it, whatever steering's retry and refresh timers are doing.
describe('steering reads the catalog again when asked for a title it does not know', () => {
  let origin: TestOrigin;
  let st: Steering;
  beforeAll(async () => {
    ({ origin, st } = await steeringOnBucket(600_000));
    const body = JSON.stringify(heartbeat({ id: 'od-1', url: 'http://127.0.0.1:9301', region: 'us-east' }));
    const r = await request(`${st.url}/v1/edges/heartbeat`, { method: 'POST', body, headers: { 'content-type': 'application/json', ...signedHeaders(body) } });
    await r.body.text();
    expect(r.statusCode).toBe(200);
  });
  afterAll(async () => {
    await st?.close();
    await origin?.close();
  });

  it('an empty bucket is 502 (no catalog yet); the first steer and play after the seed answer 200; a title still unknown is 404', async () => {
    const none = await get(`${st.url}/v1/steer?title=title-0001&region=us-east`);
    expect(none.status).toBe(502);
    expectErrorBody(none.text, 'E_ORIGIN_UNAVAILABLE', /title catalog unavailable/);

    await origin.put('catalog.json', serializeCatalog(testCatalog(1)), 'application/json');
    const first = await get(`${st.url}/v1/steer?title=title-0001&region=us-east`);
    expect(first.status).toBe(200);
    expect(JSON.parse(first.text).edges[0].id).toBe('od-1');

    // A loaded catalog with a 10-minute refresh: a title added since is found on first ask too.
    await origin.put('catalog.json', serializeCatalog(testCatalog(2)), 'application/json');
    const added = await get(`${st.url}/v1/steer?title=title-0002&region=us-east`);
    expect(added.status).toBe(200);

    const unknown = await get(`${st.url}/v1/steer?title=title-0099&region=us-east`);
    expect(unknown.status).toBe(404);
    expectErrorBody(unknown.text, 'E_NOT_FOUND', /unknown title "title-0099"/);
  });

  it('a flood of unknown titles shares reads: at most one per 250 ms, not one per request', async () => {
    const reads = vi.spyOn(origin.reader, 'getObject');
    try {
      const t0 = Date.now();
      const answers = await Promise.all(Array.from({ length: 200 }, (_, i) => get(`${st.url}/v1/steer?title=nope-${i}&region=us-east`)));
      const elapsed = Date.now() - t0;
      expect(answers.filter((a) => a.status !== 404)).toEqual([]);
      const catalogReads = reads.mock.calls.filter(([key]) => key === 'catalog.json').length;
      expect(catalogReads).toBeGreaterThanOrEqual(1);
      expect(catalogReads).toBeLessThanOrEqual(1 + Math.ceil(elapsed / 250));
    } finally {
      reads.mockRestore();
    }
  });
});

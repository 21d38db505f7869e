/**
 * CORS on a real steering server (issue 13): hls.js on a page of another origin asks /v1/steer,
 * loads the session master and reloads the Content Steering manifest; every answer, errors
 * included, lets that page read it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Steering, startSteering } from '../../steering/server.ts';
import { call, curlPreflight, expectCors, expectNoCors, expectPreflight, PREFLIGHT } from '../cors-client.ts';
import { expectErrorBody } from '../error-body.ts';
import { heartbeat, signedHeaders, TEST_EDGE_KEY, testCatalog } from './helpers.ts';

const opts = {
  edgeKey: TEST_EDGE_KEY,
  port: 0,
  tokenSecret: null,
  catalog: testCatalog(3),
  registry: { probeIntervalMs: 0, rise: 1, heartbeatIntervalMs: 60_000 },
};

describe('steering CORS', () => {
  let any: Steering;
  let listed: Steering;
  const page = { origin: PREFLIGHT.origin };

  beforeAll(async () => {
    any = await startSteering(opts);
    listed = await startSteering({ ...opts, corsOrigins: [PREFLIGHT.origin] });
  });
  afterAll(async () => {
    await any?.close();
    await listed?.close();
  });

  it('answers /v1/steer with ACAO even while it has no edge (503), and after', async () => {
    const none = await call(any.url, '/v1/steer?title=title-0001', { headers: page });
    expect(none.status).toBe(503);
    expectErrorBody(none.body, 'E_NO_EDGE');
    expectCors(none);
    for (const [id, port] of [
      ['c-1', 9201],
      ['c-2', 9202],
    ] as const) {
      const body = JSON.stringify(heartbeat({ id, url: `http://127.0.0.1:${port}`, region: 'us-east' }));
      for (const st of [any, listed]) {
        const r = await call(st.url, '/v1/edges/heartbeat', { method: 'POST', body, headers: { 'content-type': 'application/json', ...signedHeaders(body) } });
        expect(r.status).toBe(200);
      }
    }
    const steer = await call(any.url, '/v1/steer?title=title-0001&region=us-east', { headers: page });
    expect(steer.status).toBe(200);
    expectCors(steer);
  });

  it('answers the session master and the Content Steering manifest with ACAO', async () => {
    const master = await call(any.url, '/v1/play/title-0002/master.m3u8?region=us-east', { headers: page });
    expect(master.status).toBe(200);
    expectCors(master);
    const serverUri = /#EXT-X-CONTENT-STEERING:SERVER-URI="([^"]+)"/.exec(master.body.toString())?.[1];
    expect(serverUri).toBeDefined();
    const u = new URL(serverUri!);
    const manifest = await call(any.url, `${u.pathname}?_HLS_pathway=c-1&_HLS_throughput=5000000`, { headers: page });
    expect(manifest.status).toBe(200);
    expect(JSON.parse(manifest.body.toString())).toMatchObject({ VERSION: 1 });
    expectCors(manifest);
    // hls.js preflights neither, but a page adding headers would: the manifest's path allows it.
    expectPreflight(await call(any.url, u.pathname, { method: 'OPTIONS', headers: PREFLIGHT }), 'GET, HEAD, POST');
  });

  it('answers errors, /healthz and /metrics with ACAO', async () => {
    for (const [path, status] of [
      ['/v1/steering/nope.json', 404],
      ['/v1/play/title-9999/master.m3u8', 404],
      ['/v1/steer', 400],
      ['/nope', 404],
      ['/healthz', 200],
      ['/metrics', 200],
    ] as const) {
      const a = await call(any.url, path, { headers: page });
      expect(a.status, path).toBe(status);
      expectCors(a);
    }
    const method = await call(any.url, '/v1/edges/heartbeat', { headers: page });
    expect(method.status).toBe(405);
    expectCors(method);
  });

  it('answers preflights 204 with GET, HEAD, POST, from curl too', async () => {
    for (const path of ['/v1/steer?title=title-0001', '/v1/edges/heartbeat', '/nope'])
      expectPreflight(await call(any.url, path, { method: 'OPTIONS', headers: PREFLIGHT }), 'GET, HEAD, POST');
    expectPreflight(await curlPreflight(`${any.url}/v1/steer?title=title-0001`), 'GET, HEAD, POST');
  });

  it('with an allow-list: echoes the listed Origin, refuses other preflights with 403', async () => {
    expectCors(await call(listed.url, '/v1/steer?title=title-0001&region=us-east', { headers: page }), PREFLIGHT.origin);
    expectCors(await call(listed.url, '/v1/steering/nope.json', { headers: page }), PREFLIGHT.origin);
    expectNoCors(await call(listed.url, '/v1/steer?title=title-0001', { headers: { origin: 'https://other.example' } }));
    expectPreflight(await curlPreflight(`${listed.url}/v1/steer`), 'GET, HEAD, POST', PREFLIGHT.origin);
    const refused = await curlPreflight(`${listed.url}/v1/steer`, 'https://other.example');
    expect(refused.status).toBe(403);
    expectErrorBody(refused.body, 'E_FORBIDDEN', /may not read/);
  });
});

import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeServer, listen } from '../../common/http.ts';
import { createHardenedServer } from '../../common/http-server.ts';
import { type Edge, startEdge } from '../../edge/server.ts';
import type { OriginObject, OriginReader } from '../../origin/reader.ts';
import { type Steering, startSteering } from '../../steering/server.ts';
import { testCatalog, TEST_EDGE_KEY } from '../steering/helpers.ts';

const PAGE = 'http://player.example:8080';
const noOrigin = {
  async getObject(): Promise<OriginObject> {
    throw new Error('not used');
  },
  async ping(): Promise<void> {},
} as unknown as OriginReader;

async function call(url: string, method: 'GET' | 'OPTIONS', headers: Record<string, string>) {
  const res = await request(url, { method, headers });
  await res.body.dump();
  return { status: res.statusCode, headers: res.headers };
}

describe('CORS on edges and steering (a page of its own origin can play)', () => {
  let st: Steering;
  let edge: Edge;
  beforeAll(async () => {
    st = await startSteering({ edgeKey: TEST_EDGE_KEY, port: 0, tokenSecret: 'cors-secret-1', catalog: testCatalog(1), registry: { probeIntervalMs: 0 } });
    edge = await startEdge({
      edgeKey: TEST_EDGE_KEY,
      id: 'edge-cors',
      region: 'us-east',
      capacityBytes: 1_000_000,
      origin: noOrigin,
      tokenSecret: 'cors-secret-1',
    });
  });
  afterAll(async () => {
    await edge?.close();
    await st?.close();
  });

  it('an error answer (403 missing token) still carries Access-Control-Allow-Origin and the exposed headers', async () => {
    const r = await call(`${edge.url}/vod/title-0001/master.m3u8`, 'GET', { origin: PAGE });
    expect(r.status).toBe(403);
    expect(r.headers['access-control-allow-origin']).toBe('*');
    const exposed = String(r.headers['access-control-expose-headers']).split(/,\s*/);
    for (const h of ['X-Edge-Id', 'X-Cache', 'Cache-Status', 'Age', 'Content-Range']) expect(exposed).toContain(h);
  });

  it('a preflight for Range and CMCD headers gets 204 with what it asked for allowed, on the edge and on steering', async () => {
    for (const url of [`${edge.url}/vod/title-0001/720p/seg-00001.ts`, `${st.url}/v1/steering/abc.json`]) {
      const r = await call(url, 'OPTIONS', {
        origin: PAGE,
        'access-control-request-method': 'GET',
        'access-control-request-headers': 'range, cmcd-request, cmcd-session',
      });
      expect(r.status, url).toBe(204);
      expect(r.headers['access-control-allow-origin']).toBe('*');
      expect(String(r.headers['access-control-allow-methods'])).toMatch(/\bGET\b.*\bHEAD\b/);
      const allowed = String(r.headers['access-control-allow-headers']).toLowerCase().split(/,\s*/);
      for (const h of ['range', 'cmcd-request', 'cmcd-session', 'cmcd-object', 'cmcd-status']) expect(allowed).toContain(h);
      expect(Number(r.headers['access-control-max-age'])).toBeGreaterThan(0);
    }
  });

  it('steering answers carry it too, successes and errors alike', async () => {
    expect((await call(`${st.url}/v1/catalog`, 'GET', { origin: PAGE })).headers['access-control-allow-origin']).toBe('*');
    const missing = await call(`${st.url}/v1/play/nope/master.m3u8`, 'GET', { origin: PAGE });
    expect(missing.status).toBeGreaterThanOrEqual(400);
    expect(missing.headers['access-control-allow-origin']).toBe('*');
  });
});

describe('CORS with an allow-list of page origins', () => {
  const { server } = createHardenedServer((_req, res) => res.end('ok'), { cors: { origins: [PAGE] } });
  let url: string;
  beforeAll(async () => {
    url = `http://127.0.0.1:${await listen(server, 0)}/`;
  });
  afterAll(() => closeServer(server));

  it('echoes an allowed origin, names no other, and varies on Origin', async () => {
    const ok = await call(url, 'GET', { origin: PAGE });
    expect(ok.headers['access-control-allow-origin']).toBe(PAGE);
    expect(ok.headers.vary).toMatch(/Origin/);
    const other = await call(url, 'GET', { origin: 'http://evil.example' });
    expect(other.headers['access-control-allow-origin']).toBeUndefined();
    const pre = await call(url, 'OPTIONS', { origin: 'http://evil.example', 'access-control-request-method': 'GET' });
    expect(pre.status).toBe(204);
    expect(pre.headers['access-control-allow-methods']).toBeUndefined();
  });
});

import { Readable } from 'node:stream';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CATALOG_KEY, HEARTBEAT_LIMITS } from '../../common/contracts.ts';
import { ErrorCodes, httpStatus, OcdnError } from '../../common/errors.ts';
import { type Edge, startEdge } from '../../edge/server.ts';
import type { OriginObject, OriginReader, OriginStream } from '../../origin/reader.ts';
import { type Steering, startSteering } from '../../steering/server.ts';
import { expectErrorBody } from '../error-body.ts';
import { heartbeat, signedHeaders, testCatalog, TEST_EDGE_KEY } from '../steering/helpers.ts';

/** An origin whose catalog reads fine and every other object is unavailable: a broken bucket behind both services. */
const brokenOrigin = {
  async getObject(key: string): Promise<OriginObject> {
    if (key === CATALOG_KEY) return { body: Buffer.from(JSON.stringify(testCatalog(2))) } as OriginObject;
    throw new OcdnError(ErrorCodes.ORIGIN_UNAVAILABLE, `origin unavailable for ${key}: connection refused`);
  },
  async getObjectStream(key: string): Promise<OriginStream> {
    const obj = await brokenOrigin.getObject(key);
    return { key, body: Readable.from([obj.body]), size: obj.body.length } as OriginStream;
  },
  async ping(): Promise<void> {},
} as unknown as OriginReader & { getObject(key: string): Promise<OriginObject> };

async function get(url: string, init: { method?: 'GET' | 'POST'; body?: string } = {}) {
  const res = await request(url, { method: init.method ?? 'GET', body: init.body, headers: init.body ? { 'content-type': 'application/json' } : {} });
  return { status: res.statusCode, headers: res.headers, text: await res.body.text() };
}

describe('one error body and one status mapping across services', () => {
  let st: Steering;
  let edge: Edge;
  beforeAll(async () => {
    st = await startSteering({
      edgeKey: TEST_EDGE_KEY,
      port: 0,
      tokenSecret: 'shape-secret',
      origin: brokenOrigin,
      registry: { probeIntervalMs: 0, rise: 1, heartbeatIntervalMs: 60_000 },
    });
    edge = await startEdge({
      edgeKey: TEST_EDGE_KEY,
      id: 'edge-shape',
      region: 'us-east',
      capacityBytes: 1_000_000,
      origin: brokenOrigin,
      tokenSecret: 'shape-secret',
    });
    st.registry.heartbeat(heartbeat({ id: edge.id, url: edge.url }));
  });
  afterAll(async () => {
    await edge?.close();
    await st?.close();
  });

  it('answers E_ORIGIN_UNAVAILABLE with the same status (502) from steering and from an edge', async () => {
    const fromSteering = await get(`${st.url}/v1/play/title-0001/master.m3u8`);
    expectErrorBody(fromSteering.text, 'E_ORIGIN_UNAVAILABLE', /master\.m3u8/);
    const signed = JSON.parse((await get(`${st.url}/v1/steer?title=title-0001`)).text).edges[0].url as string;
    const fromEdge = await get(signed);
    expectErrorBody(fromEdge.text, 'E_ORIGIN_UNAVAILABLE', /master\.m3u8/);
    expect(fromSteering.status).toBe(httpStatus(ErrorCodes.ORIGIN_UNAVAILABLE));
    expect(fromEdge.status).toBe(fromSteering.status);
    expect(fromEdge.status).toBe(502);
  });

  it('gives edge 403, 404 and 405 and steering 404 and 503 the same JSON shape', async () => {
    const cases: [string, number, string, RegExp][] = [
      [`${edge.url}/vod/title-0001/master.m3u8`, 403, 'E_FORBIDDEN', /missing token/],
      [`${edge.url}/elsewhere`, 404, 'E_NOT_FOUND', /not found: \/elsewhere/],
      [`${st.url}/v1/steer?title=title-0404`, 404, 'E_NOT_FOUND', /unknown title "title-0404"/],
      [`${st.url}/v1/elsewhere`, 404, 'E_NOT_FOUND', /not found: \/v1\/elsewhere/],
    ];
    for (const [url, status, code, message] of cases) {
      const r = await get(url);
      expect(r.status, url).toBe(status);
      expect(r.headers['content-type'], url).toBe('application/json; charset=utf-8');
      expectErrorBody(r.text, code as 'E_NOT_FOUND', message);
    }
    const post = await get(`${edge.url}/healthz`, { method: 'POST', body: '{}' });
    expect(post.status).toBe(405);
    expectErrorBody(post.text, 'E_METHOD', /use GET, HEAD/);
    st.registry.heartbeat(heartbeat({ id: edge.id, url: edge.url, healthy: false }));
    const none = await get(`${st.url}/v1/steer?title=title-0001`);
    expect(none.status).toBe(503);
    expect(none.headers['retry-after']).toBe('1');
    expectErrorBody(none.text, 'E_NO_EDGE', /no healthy edge/);
  });

  it('refuses a heartbeat larger than its bound with 413 before reading it', async () => {
    const big = 'x'.repeat(HEARTBEAT_LIMITS.maxBodyBytes + 1);
    // Signed, so the size bound is what refuses it (an unsigned one is refused first, 401).
    const res = await request(`${st.url}/v1/edges/heartbeat`, {
      method: 'POST',
      body: big,
      headers: { 'content-type': 'application/json', ...signedHeaders(big, 'edge-x') },
    });
    const text = await res.body.text();
    expect(res.statusCode).toBe(413);
    expectErrorBody(text, 'E_PAYLOAD_TOO_LARGE', new RegExp(`body larger than ${HEARTBEAT_LIMITS.maxBodyBytes} bytes`));
  });
});

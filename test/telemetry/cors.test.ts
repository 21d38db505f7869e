/**
 * CORS on a real aggregator against the real broker (issue 13): the web console reads /v1/qoe
 * and its stream from another origin, and a browser player posts JSON beacons to /v1/events,
 * which a browser preflights (application/json is not a CORS-safelisted type).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type AggregatorHandle, startAggregator } from '../../telemetry/aggregator.ts';
import { call, curlPreflight, expectCors, expectPreflight, PREFLIGHT } from '../cors-client.ts';
import { expectErrorBody } from '../error-body.ts';
import { brokers, freshTopics } from './helpers.ts';

describe('aggregator CORS', () => {
  let agg: AggregatorHandle;
  let spillDir: string;
  const page = { origin: PREFLIGHT.origin };

  beforeAll(async () => {
    spillDir = await mkdtemp(join(tmpdir(), 'ocdn-cors-spill-'));
    agg = await startAggregator({
      brokers: brokers(),
      topics: await freshTopics('cors'),
      port: 0,
      groupId: `g-${randomBytes(4).toString('hex')}`,
      windowMs: 10_000,
      tickMs: 100,
      spillDir,
    });
  });
  afterAll(async () => {
    await agg?.close();
    if (spillDir) await rm(spillDir, { recursive: true, force: true });
  });

  it('answers /v1/qoe, its errors, /healthz and /metrics with ACAO', async () => {
    for (const [path, status] of [
      ['/v1/qoe?by=edge&last=5m', 200],
      ['/v1/qoe?by=nope', 400],
      ['/nope', 404],
      ['/healthz', 200],
      ['/metrics', 200],
    ] as const) {
      const a = await call(agg.url, path, { headers: page });
      expect(a.status, `${path} ${a.body.toString().slice(0, 200)}`).toBe(status);
      if (status >= 400) expectErrorBody(a.body, status === 400 ? 'E_BAD_REQUEST' : 'E_NOT_FOUND');
      expectCors(a);
    }
  });

  it('preflights POST /v1/events (204, Content-Type allowed), then takes a JSON beacon with ACAO', async () => {
    const pre = { ...PREFLIGHT, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' };
    expectPreflight(await call(agg.url, '/v1/events', { method: 'OPTIONS', headers: pre }), 'GET, HEAD, POST');
    expectPreflight(await curlPreflight(`${agg.url}/v1/events`), 'GET, HEAD, POST');
    const event = {
      v: 1,
      id: randomUUID(),
      type: 'session_start',
      ts: Date.now(),
      sessionId: `web-${randomBytes(4).toString('hex')}`,
      seq: 0,
      title: 'title-0001',
      edgeId: 'edge-1',
      region: 'eu',
      isp: 'isp1',
      device: 'browser',
      abr: 'hls.js',
    };
    const posted = await call(agg.url, '/v1/events', {
      method: 'POST',
      headers: { ...page, 'content-type': 'application/json' },
      body: JSON.stringify({ events: [event] }),
    });
    expect(posted.status, posted.body.toString()).toBe(202);
    expectCors(posted);
    const refused = await call(agg.url, '/v1/events', { method: 'POST', headers: { ...page, 'content-type': 'image/png' }, body: 'x' });
    expect(refused.status).toBe(415);
    expectCors(refused);
  });
});

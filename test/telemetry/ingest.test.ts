/**
 * Browser QoE into the same pipeline (issue 13): POST /v1/events on a real aggregator against the
 * real broker, the way navigator.sendBeacon sends (text/plain), through to /v1/qoe and the DLQ;
 * its refusals (400, 413, 415, 429) and bounds; and the live SSE stream GET /v1/qoe/stream.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Value } from '@sinclair/typebox/value';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EVENT_BATCH_LIMITS, type EventBatchAck, EventBatchAckSchema, type QoeResponse, QoeResponseSchema } from '../../common/contracts.ts';
import { waitFor } from '../../common/http.ts';
import { readMetric } from '../../common/metrics.ts';
import { type AggregatorHandle, startAggregator } from '../../telemetry/aggregator.ts';
import type { TopicNames } from '../../telemetry/topics.ts';
import { expectErrorBody } from '../error-body.ts';
import { brokers, freshTopics, qoe, readTopic } from './helpers.ts';

const WINDOW = { windowMs: 10_000, graceMs: 1_000, idleMs: 2_000, provisionalMs: 200, tickMs: 100 };

/** A browser player's session: envelope fields filled in, event time now. */
function browserSession(sessionId = `web-${randomBytes(4).toString('hex')}`) {
  let seq = 0;
  return (type: string, fields: Record<string, unknown> = {}) => ({
    v: 1,
    id: randomUUID(),
    type,
    ts: Date.now(),
    sessionId,
    seq: seq++,
    title: 'title-0001',
    edgeId: 'edge-1',
    region: 'eu',
    isp: 'isp1',
    device: 'browser',
    abr: 'hls.js',
    ...fields,
  });
}

const seg = { rendition: '730k', bitrate: 730_000, index: 0, bytes: 365_000, ttfbMs: 12, downloadMs: 80, throughputBps: 36e6, cacheStatus: 'HIT' };

/** What sendBeacon(url, string) sends: a POST with text/plain;charset=UTF-8. */
function beacon(url: string, body: unknown, contentType: string | null = 'text/plain;charset=UTF-8'): Promise<Response> {
  return fetch(`${url}/v1/events`, {
    method: 'POST',
    body: typeof body === 'string' ? body : JSON.stringify(body),
    headers: contentType === null ? {} : { 'content-type': contentType },
  });
}

/** A beacon from a given loopback address (127.x.y.z all reach a server on 127.0.0.1). */
function beaconFrom(url: string, localAddress: string, body: unknown): Promise<number> {
  const u = new URL(`${url}/v1/events`);
  const data = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: u.hostname,
        port: u.port,
        path: u.pathname,
        method: 'POST',
        localAddress,
        agent: false,
        headers: { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(data) },
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}

async function browserTotal(url: string): Promise<number> {
  const r = await qoe(url, { by: 'device', last: '5m' });
  return r.totals.find((t) => t.value === 'browser')?.events ?? 0;
}

/** Reads an SSE body into events and comment lines until `enough` says so. */
async function readSse(res: Response, enough: (events: { event: string; data: string }[], comments: string[]) => boolean) {
  const events: { event: string; data: string }[] = [];
  const comments: string[] = [];
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return { events, comments, ended: true, reader };
    buf += decoder.decode(value, { stream: true });
    for (let i = buf.indexOf('\n\n'); i !== -1; i = buf.indexOf('\n\n')) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const fields: Record<string, string> = {};
      for (const line of block.split('\n')) {
        if (line.startsWith(':')) comments.push(line);
        else {
          const c = line.indexOf(':');
          fields[line.slice(0, c)] = line.slice(c + 1).replace(/^ /, '');
        }
      }
      if (fields.data !== undefined) events.push({ event: fields.event ?? 'message', data: fields.data });
    }
    if (enough(events, comments)) return { events, comments, ended: false, reader };
  }
}

async function healthz(url: string): Promise<{ streams: number; ingest: { clients: number } | null }> {
  return (await (await fetch(`${url}/healthz`)).json()) as { streams: number; ingest: { clients: number } | null };
}

describe('browser QoE ingest: POST /v1/events → the spilling producer → Kafka → aggregator', () => {
  let topics: TopicNames;
  let agg: AggregatorHandle;
  let spillDir: string;

  beforeAll(async () => {
    topics = await freshTopics('ingest');
    spillDir = await mkdtemp(join(tmpdir(), 'ocdn-ingest-spill-'));
    agg = await startAggregator({
      brokers: brokers(),
      topics,
      port: 0,
      groupId: `g-${randomBytes(4).toString('hex')}`,
      ...WINDOW,
      spillDir,
      stream: { heartbeatMs: 500 },
    });
  });

  afterAll(async () => {
    await agg?.close();
    if (spillDir) await rm(spillDir, { recursive: true, force: true });
  });

  it('takes a sendBeacon-style text/plain batch (202) and counts it as device "browser"', async () => {
    const s = browserSession();
    const events = [
      s('session_start'),
      s('startup', { vstMs: 420, rendition: '730k', bitrate: 730_000 }),
      s('segment', seg),
      s('heartbeat', { bufferS: 12, rendition: '730k', bitrate: 730_000, playedS: 4 }),
    ];
    const res = await beacon(agg.url, { events });
    expect(res.status).toBe(202);
    const ack = (await res.json()) as EventBatchAck;
    expect(Value.Check(EventBatchAckSchema, ack)).toBe(true);
    expect(ack).toEqual({ accepted: 4, invalid: 0 });
    await waitFor(async () => (await browserTotal(agg.url)) === events.length, { timeoutMs: 30_000, what: 'the beacon events in /v1/qoe?by=device' });
    // Keyed by sessionId as player-sim's: the session's events share one partition.
    const r = await qoe(agg.url, { by: 'device', last: '5m' });
    expect(r.totals.find((t) => t.value === 'browser')).toMatchObject({ sessions: 1, startups: 1, segments: 1, vstP50Ms: expect.any(Number) });
    const raw = await readTopic(topics.events, events.length);
    expect(new Set(raw.map((m) => m.partition)).size).toBe(1);
    // No content type (fetch with a Blob of no type) and application/json are taken too.
    expect((await beacon(agg.url, { events: [s('heartbeat', { bufferS: 1, rendition: '730k', bitrate: 730_000, playedS: 5 })] }, null)).status).toBe(202);
    expect(
      (await beacon(agg.url, { events: [s('heartbeat', { bufferS: 1, rendition: '730k', bitrate: 730_000, playedS: 6 })] }, 'application/json')).status,
    ).toBe(202);
    await waitFor(async () => (await browserTotal(agg.url)) === events.length + 2, { timeoutMs: 30_000, what: 'the two later beacons' });
  });

  it('counts the valid events of a batch and sends each invalid one (schema, event time) to the DLQ with its reason', async () => {
    const before = await browserTotal(agg.url);
    const s = browserSession();
    const bad = s('startup', { rendition: '730k', bitrate: 730_000 }); // no vstMs
    const future = { ...s('heartbeat', { bufferS: 1, rendition: '730k', bitrate: 730_000, playedS: 1 }), ts: Date.now() + 3_600_000 };
    const res = await beacon(agg.url, { events: [s('session_start'), bad, s('segment', seg), future] });
    expect(res.status).toBe(202);
    expect(await res.json()).toEqual({ accepted: 2, invalid: 2 });
    await waitFor(async () => (await browserTotal(agg.url)) === before + 2, { timeoutMs: 30_000, what: 'the two valid events counted' });
    const dlq = await readTopic(topics.dlq, 2);
    const bodies = dlq.map((d) => ({
      key: d.key,
      header: d.headers['ocdn-dlq-reason'],
      body: JSON.parse(d.value) as { reason: string; raw: string; source: string },
    }));
    const missing = bodies.find((b) => (JSON.parse(b.body.raw) as { id: string }).id === bad.id);
    const dated = bodies.find((b) => (JSON.parse(b.body.raw) as { id: string }).id === future.id);
    expect(missing?.body).toMatchObject({ reason: 'missing field vstMs', source: 'POST /v1/events' });
    expect(missing?.header).toBe('missing field vstMs');
    expect(missing?.key).toBe(bad.sessionId);
    // The pipeline's own event-time gate, with the aggregator's bounds (5 min future skew by default).
    expect(dated?.body.reason).toMatch(/^event time \d+ is 3600 s after its arrival \d+ \(max future skew 300 s\)$/);
    const metrics = await (await fetch(`${agg.url}/metrics`)).text();
    expect(readMetric(metrics, 'ocdn_ingest_events_total', { outcome: 'invalid' })).toBe(2);
    expect(readMetric(metrics, 'ocdn_ingest_events_total', { outcome: 'accepted' })).toBe(8);
    expect(readMetric(metrics, 'ocdn_ingest_requests_total', { status: '202' })).toBe(4);
  });

  it('refuses an oversize body (413), a foreign content type (415), non-JSON and non-batches (400), other methods (405)', async () => {
    const big = await beacon(agg.url, `{"events":[${'"x",'.repeat(EVENT_BATCH_LIMITS.maxBodyBytes / 4)}"x"]}`);
    expect(big.status).toBe(413);
    expectErrorBody(await big.text(), 'E_PAYLOAD_TOO_LARGE', /larger than 65536 bytes/);
    const form = await beacon(agg.url, 'events=1', 'application/x-www-form-urlencoded');
    expect(form.status).toBe(415);
    expectErrorBody(await form.text(), 'E_UNSUPPORTED_MEDIA_TYPE', /application\/x-www-form-urlencoded/);
    const gz = await fetch(`${agg.url}/v1/events`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' } });
    expect(gz.status).toBe(415);
    await gz.body?.cancel();
    const notJson = await beacon(agg.url, 'not json{');
    expect(notJson.status).toBe(400);
    expectErrorBody(await notJson.text(), 'E_BAD_REQUEST', /not valid JSON/);
    const many = await beacon(agg.url, { events: Array.from({ length: EVENT_BATCH_LIMITS.maxEvents + 1 }, () => ({})) });
    expect(many.status).toBe(400);
    expectErrorBody(await many.text(), 'E_BAD_REQUEST', /must NOT have more than 200 items/);
    const get = await fetch(`${agg.url}/v1/events`);
    expect(get.status).toBe(405);
    expect(get.headers.get('allow')).toBe('POST');
    await get.body?.cancel();
    const metrics = await (await fetch(`${agg.url}/metrics`)).text();
    expect(readMetric(metrics, 'ocdn_ingest_requests_total', { status: '413' })).toBe(1);
    expect(readMetric(metrics, 'ocdn_ingest_requests_total', { status: '415' })).toBe(2);
  });

  it('streams /v1/qoe as Server-Sent Events: a snapshot at once and every second, heartbeats, closed when the client goes', async () => {
    const bad = await fetch(`${agg.url}/v1/qoe/stream?by=nope`);
    expect(bad.status).toBe(400);
    expectErrorBody(await bad.text(), 'E_BAD_REQUEST', /by must be one of/);
    const ac = new AbortController();
    const res = await fetch(`${agg.url}/v1/qoe/stream?by=device&last=5m`, { signal: ac.signal });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const got = await readSse(res, (ev, comments) => ev.length >= 2 && comments.length >= 1);
    expect(got.ended).toBe(false);
    for (const e of got.events.slice(0, 2)) {
      expect(e.event).toBe('qoe');
      const body = JSON.parse(e.data) as QoeResponse;
      expect(Value.Check(QoeResponseSchema, body), e.data.slice(0, 300)).toBe(true);
      expect(body.by).toBe('device');
      expect(body.totals.find((t) => t.value === 'browser')?.events).toBeGreaterThan(0);
    }
    expect(got.comments).toContain(': keep-alive');
    expect((await healthz(agg.url)).streams).toBe(1);
    ac.abort();
    await got.reader.cancel().catch(() => undefined);
    await waitFor(async () => (await healthz(agg.url)).streams === 0, { timeoutMs: 10_000, what: 'the stream closed on the server' });
  });
});

describe('ingest and stream bounds', () => {
  let topics: TopicNames;
  let agg: AggregatorHandle;
  let spillDir: string;
  let closed = false;

  beforeAll(async () => {
    topics = await freshTopics('ingest-b');
    spillDir = await mkdtemp(join(tmpdir(), 'ocdn-ingest-spill-'));
    agg = await startAggregator({
      brokers: brokers(),
      topics,
      port: 0,
      groupId: `g-${randomBytes(4).toString('hex')}`,
      ...WINDOW,
      spillDir,
      ingestRate: { perClient: 1, global: 1_000, maxClients: 4 },
      stream: { maxStreams: 1 },
    });
  });

  afterAll(async () => {
    if (!closed) await agg?.close();
    if (spillDir) await rm(spillDir, { recursive: true, force: true });
  });

  it('answers a flood from one client with 429 and Retry-After', async () => {
    const s = browserSession();
    const answers = await Promise.all(Array.from({ length: 20 }, () => beaconFrom(agg.url, '127.0.0.1', { events: [s('session_start')] })));
    expect(answers.filter((a) => a === 202).length).toBeGreaterThanOrEqual(1);
    expect(answers.filter((a) => a === 429).length).toBeGreaterThanOrEqual(10);
    expect(answers.every((a) => a === 202 || a === 429)).toBe(true);
    const res = await beacon(agg.url, { events: [s('session_start')] });
    expect(res.status).toBe(429);
    expect(Number(res.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expectErrorBody(await res.text(), 'E_TOO_MANY', /at most 1\/s per client/);
  });

  it('keeps the per-client rate map bounded however many addresses send', async () => {
    const s = browserSession();
    for (let i = 2; i < 22; i++) {
      // A new address has a full bucket: each one's first beacon is taken.
      expect(await beaconFrom(agg.url, `127.0.0.${i}`, { events: [s('session_start')] })).toBe(202);
      expect((await healthz(agg.url)).ingest?.clients).toBeLessThanOrEqual(4);
    }
    const metrics = await (await fetch(`${agg.url}/metrics`)).text();
    expect(readMetric(metrics, 'ocdn_ingest_clients')).toBe(4);
  });

  it('refuses a stream past maxStreams (503), and shuts down with a stream open, ending it', async () => {
    const res = await fetch(`${agg.url}/v1/qoe/stream?by=edge&last=1m`);
    expect(res.status).toBe(200);
    const first = await readSse(res, (ev) => ev.length >= 1);
    expect(first.events[0]?.event).toBe('qoe');
    const second = await fetch(`${agg.url}/v1/qoe/stream?by=edge&last=1m`);
    expect(second.status).toBe(503);
    expect(second.headers.get('retry-after')).toBe('1');
    expectErrorBody(await second.text(), 'E_BUSY', /1 QoE streams are open/);
    closed = true;
    await agg.close();
    // The server ended the stream: the client reads to its end, not into an error.
    for (;;) if ((await first.reader.read()).done) break;
  });
});

describe('ingest turned off', () => {
  it('serves no POST /v1/events (404) and opens no ingest producer', async () => {
    const topics = await freshTopics('ingest-off');
    const agg = await startAggregator({ brokers: brokers(), topics, port: 0, groupId: `g-${randomBytes(4).toString('hex')}`, ...WINDOW, ingest: false });
    try {
      const res = await beacon(agg.url, { events: [browserSession()('session_start')] });
      expect(res.status).toBe(404);
      expectErrorBody(await res.text(), 'E_NOT_FOUND');
      expect((await healthz(agg.url)).ingest).toBeNull();
    } finally {
      await agg.close();
    }
  });
});

import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readMetric } from '../../common/metrics.ts';
import { startAggregator, type AggregatorHandle } from '../../telemetry/aggregator.ts';
import type { TopicNames } from '../../telemetry/topics.ts';
import { createProducer, type KafkaEventProducer } from '../../telemetry/producer.ts';
import { verify } from '../../telemetry/verify.ts';
import { expectErrorBody } from '../error-body.ts';
import { Value } from '@sinclair/typebox/value';
import { type QoeResponse, QoeResponseSchema } from '../../common/contracts.ts';
import {
  brokers,
  dataset,
  EXPECTED,
  exactQuantiles,
  freshTopics,
  produceDataset,
  qoe,
  readTopic,
  settled,
  T0,
  T0_EVENT_TIME,
  type Dataset,
} from './helpers.ts';

const WINDOW = { windowMs: 10_000, graceMs: 1_000, idleMs: 2_000, provisionalMs: 200, tickMs: 100 };

describe('QoE pipeline: producer → real Kafka → aggregator', () => {
  let topics: TopicNames;
  let agg: AggregatorHandle;
  let prod: KafkaEventProducer;
  let spillDir: string;
  let data: Dataset;
  let settledResult: QoeResponse;

  beforeAll(async () => {
    topics = await freshTopics('pipe');
    spillDir = await mkdtemp(join(tmpdir(), 'ocdn-spill-'));
    agg = await startAggregator({ brokers: brokers(), topics, port: 0, groupId: `g-${randomBytes(4).toString('hex')}`, ...WINDOW, eventTime: T0_EVENT_TIME });
    prod = createProducer({ brokers: brokers(), topic: topics.events, spillFile: join(spillDir, 'p.jsonl'), lingerMs: 5 });
    data = dataset();
    await produceDataset(prod, data);
    settledResult = await settled(agg.url);
  });

  afterAll(async () => {
    await prod?.close();
    await agg?.close();
    if (spillDir) await rm(spillDir, { recursive: true, force: true });
  });

  it('produces exactly the hand-computed aggregates (counts, sums, ratios)', () => {
    const t = settledResult.totals[0]!;
    expect(t.value).toBe('*');
    const e = EXPECTED.all;
    for (const k of [
      'events',
      'duplicates',
      'late',
      'sessions',
      'startups',
      'sessionEnds',
      'startFailures',
      'exitsBeforeStart',
      'playS',
      'stallS',
      'stalls',
      'switches',
      'errors',
      'fatalErrors',
      'failovers',
      'segments',
      'segmentBytes',
    ] as const) {
      expect(t[k], k).toBe(e[k]);
    }
    expect(t.rebufferRatio).toBeCloseTo(e.rebufferRatio, 12);
    expect(t.stallsPerMin).toBeCloseTo(e.stallsPerMin, 12);
    expect(t.switchesPerMin).toBeCloseTo(e.switchesPerMin, 12);
    expect(t.avgBitrate).toBeCloseTo(e.avgBitrate, 6);
    expect(t.errorRate).toBeCloseTo(e.errorRate, 12);
    expect(t.cacheHitRatio).toBeCloseTo(e.cacheHitRatio, 12);
    expect(t.vstMeanMs).toBeCloseTo(e.vstMeanMs, 9);
  });

  it('puts each event in its event-time window, duplicates and late events in window 0', () => {
    const got = settledResult.windows.map((w) => ({ start: w.start, events: w.rows[0]!.events, duplicates: w.rows[0]!.duplicates, late: w.rows[0]!.late }));
    expect(got).toEqual(EXPECTED.windows);
    expect(settledResult.windows.filter((w) => w.start < T0 + 20_000).every((w) => w.final)).toBe(true);
  });

  it('splits by edge and by region', async () => {
    const byEdge = await qoe(agg.url, { by: 'edge', window: '10s' });
    for (const [edge, want] of Object.entries(EXPECTED.byEdge)) {
      const row = byEdge.totals.find((r) => r.value === edge);
      expect(row, `edge "${edge}"`).toBeDefined();
      for (const [k, v] of Object.entries(want)) expect(row![k as keyof typeof row], `${edge}.${k}`).toBe(v);
    }
    expect(byEdge.totals).toHaveLength(Object.keys(EXPECTED.byEdge).length);
    const byRegion = await qoe(agg.url, { by: 'region', window: '10s' });
    expect(Object.fromEntries(byRegion.totals.map((r) => [r.value, r.events]))).toEqual(EXPECTED.byRegion);
  });

  it('reports video start time percentiles within the sketch error', async () => {
    const r = await qoe(agg.url, { by: 'edge', window: '10s' });
    const e3 = r.totals.find((x) => x.value === 'e3')!;
    for (const [q, got] of [
      [0.5, e3.vstP50Ms],
      [0.95, e3.vstP95Ms],
      [0.99, e3.vstP99Ms],
    ] as const) {
      const [lo, hi] = exactQuantiles(data.vstValues, q);
      expect(got!).toBeGreaterThanOrEqual(lo * 0.99);
      expect(got!).toBeLessThanOrEqual(hi * 1.01);
    }
  });

  it('rolls up to 1 minute windows and honours last=', async () => {
    const m = await qoe(agg.url, { by: 'all', window: '1m' });
    expect(Value.Check(QoeResponseSchema, m)).toBe(true);
    expect(m.windows).toHaveLength(1);
    expect(m.windows[0]!.rows[0]!.events).toBe(EXPECTED.all.events);
    const last = await qoe(agg.url, { by: 'all', window: '10s', last: '10s' });
    expect(last.windows.map((w) => w.start)).toEqual([T0 + 30_000]);
    const bad = await fetch(`${agg.url}/v1/qoe?by=galaxy`);
    expect(bad.status).toBe(400);
    expectErrorBody(await bad.text(), 'E_BAD_REQUEST', /by must be one of/);
    const post = await fetch(`${agg.url}/v1/qoe`, { method: 'POST' });
    expect(post.status).toBe(405);
    expectErrorBody(await post.text(), 'E_METHOD');
    const nowhere = await fetch(`${agg.url}/v2/qoe`);
    expect(nowhere.status).toBe(404);
    expectErrorBody(await nowhere.text(), 'E_NOT_FOUND', /try \/v1\/qoe/);
  });

  it('sends every invalid event to the DLQ with its reason', async () => {
    const dlq = await readTopic(topics.dlq, data.invalid.length);
    expect(dlq).toHaveLength(data.invalid.length);
    for (const bad of data.invalid) {
      const m = dlq.find((x) => (JSON.parse(x.value) as { raw: string }).raw === bad.value);
      expect(m, bad.value).toBeDefined();
      const body = JSON.parse(m!.value) as { reason: string; topic: string; offset: string };
      expect(body.reason).toMatch(bad.reason);
      expect(body.topic).toBe(topics.events);
      expect(m!.headers['ocdn-dlq-reason']).toBe(body.reason);
      // Keyed by the event's session when the line has one, like the event would have been.
      let sid: string | null = null;
      try {
        sid = (JSON.parse(bad.value) as { sessionId: string }).sessionId;
      } catch {
        sid = null;
      }
      expect(m!.key).toBe(sid);
    }
    const metrics = await (await fetch(`${agg.url}/metrics`)).text();
    expect(readMetric(metrics, 'ocdn_telemetry_dlq_total')).toBe(3);
    expect(readMetric(metrics, 'ocdn_telemetry_late_events_total')).toBe(2);
    expect(readMetric(metrics, 'ocdn_telemetry_events_total', { result: 'duplicate' })).toBe(3);
    expect(readMetric(metrics, 'ocdn_telemetry_freshness_seconds_count')).toBeGreaterThan(0);
  });

  it('serves /healthz and the aggregates a recount of the raw topic gives', async () => {
    const h = await fetch(`${agg.url}/healthz`);
    expect(h.status).toBe(200);
    expect(((await h.json()) as { partitions: number[] }).partitions.length).toBeGreaterThan(0);
    const report = await verify({
      url: agg.url,
      brokers: brokers(),
      topics,
      windowMs: WINDOW.windowMs,
      graceMs: WINDOW.graceMs,
      finalOnly: true,
      eventTime: T0_EVENT_TIME,
    });
    expect(report.events).toBe(EXPECTED.all.events + EXPECTED.all.duplicates + EXPECTED.all.late);
    expect(report.invalid).toBe(3);
    expect(report.compared).toBeGreaterThan(10);
    expect(report.mismatches).toEqual([]);
  });
});

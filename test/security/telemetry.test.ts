/**
 * Issue 12, findings 3 and 4: messages and events that used to stall a partition or empty the
 * QoE view, against the real broker of the global setup. Each case asserts what lands in the
 * DLQ, that the aggregates still equal a recount of the raw topic, that new sessions show up,
 * that every partition keeps committing, and what /healthz says.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { ConfigResourceTypes, type Producer } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../common/http.ts';
import { createLogger } from '../../common/log.ts';
import { readMetric } from '../../common/metrics.ts';
import { startAggregator, type AggregatorHandle } from '../../telemetry/aggregator.ts';
import type { QoeEvent } from '../../telemetry/events.ts';
import { createKafka, type TopicNames } from '../../telemetry/kafka.ts';
import { createProducer, type KafkaEventProducer } from '../../telemetry/producer.ts';
import { verify } from '../../telemetry/verify.ts';
import { brokers, freshTopics, qoe, readTopic } from '../telemetry/helpers.ts';

const quiet = createLogger('test', { level: 'silent' });
const WINDOW = { windowMs: 1_000, graceMs: 200, idleMs: 500, provisionalMs: 200, tickMs: 100 };
/** Smaller than the broker's 1 MB so a message over it can still be produced. */
const LIMITS = { maxEvents: 1_000, maxBytes: 256 * 1024 };
const STALL_MS = 4_000;

/** A session_start and four heartbeats for each of `n` sessions named `<prefix>-<i>`, dated now. */
function sessions(prefix: string, n: number): QoeEvent[] {
  const out: QoeEvent[] = [];
  for (let i = 0; i < n; i++) {
    const base = { v: 1, sessionId: `${prefix}-${i}`, title: 'T', edgeId: `e${i % 3}`, region: 'eu', isp: 'isp', device: 'tv', abr: 'bba' };
    out.push({ ...base, id: randomUUID(), type: 'session_start', ts: Date.now(), seq: 0 } as QoeEvent);
    for (let s = 1; s <= 4; s++)
      out.push({
        ...base,
        id: randomUUID(),
        type: 'heartbeat',
        ts: Date.now(),
        seq: s,
        bufferS: 10,
        rendition: '730k',
        bitrate: 730_000,
        playedS: s,
      } as QoeEvent);
  }
  return out;
}

async function health(url: string): Promise<{ status: number; body: { ok: boolean; reason: string | null; stalled: { partition: number }[] } }> {
  const res = await fetch(`${url}/healthz`);
  return { status: res.status, body: (await res.json()) as { ok: boolean; reason: string | null; stalled: { partition: number }[] } };
}

describe('telemetry that no message can stall', () => {
  let topics: TopicNames;
  let agg: AggregatorHandle;
  let prod: KafkaEventProducer;
  let raw: Producer;
  const kafka = () => createKafka({ brokers: brokers().split(','), clientId: 'test-attacker', log: quiet });
  let admin: ReturnType<ReturnType<typeof kafka>['admin']>;

  const alterTopic = (name: string, entries: Record<string, string>) =>
    admin.alterConfigs({
      validateOnly: false,
      resources: [{ type: ConfigResourceTypes.TOPIC, name, configEntries: Object.entries(entries).map(([n, value]) => ({ name: n, value })) }],
    });

  /** Every owned partition's committed offset at the end of the events topic. */
  const allCommitted = async () => {
    const ends = await admin.fetchTopicOffsets(topics.events);
    const [c] = await admin.fetchOffsets({ groupId: `g-${topics.events}`, topics: [topics.events] });
    const at = new Map((c?.partitions ?? []).map((p) => [p.partition, Number(p.offset)]));
    return ends.every((o) => Number(o.high) === Number(o.low) || at.get(o.partition) === Number(o.high));
  };

  beforeAll(async () => {
    topics = await freshTopics('sec');
    admin = kafka().admin();
    await admin.connect();
    raw = kafka().producer({ allowAutoTopicCreation: false });
    await raw.connect();
    agg = await startAggregator({
      brokers: brokers(),
      topics,
      port: 0,
      groupId: `g-${topics.events}`,
      ...WINDOW,
      messageLimits: LIMITS,
      stallMs: STALL_MS,
      log: quiet,
    });
    prod = createProducer({
      brokers: brokers(),
      topic: topics.events,
      spillFile: `/tmp/ocdn-sec-${randomBytes(4).toString('hex')}.jsonl`,
      lingerMs: 5,
      log: quiet,
    });
  });

  afterAll(async () => {
    await prod?.close();
    await raw?.disconnect();
    await agg?.close();
    await admin?.disconnect();
  });

  it('poison messages and a future-dated event: one DLQ record each, aggregates equal the recount, new sessions counted, /healthz ok', async () => {
    const before = sessions('before', 20);
    for (const e of before) void prod.send(e);
    await prod.flush();

    // The DLQ topic takes records of at most 4 KB, so the 12 KB garbage line's record is refused as too large.
    await alterTopic(topics.dlq, { 'retention.ms': String(7 * 24 * 3600_000), 'max.message.bytes': '4096' });
    const emptyLines = '\n'.repeat(39_999); // 40,000 empty lines, 40 KB
    const oversize = JSON.stringify({ junk: 'x'.repeat(300 * 1024) }); // over LIMITS.maxBytes, under the broker's 1 MB
    const garbage = `not json ${'y'.repeat(12_000)}`;
    await raw.send({ topic: topics.events, acks: -1, messages: [{ key: 'before-0', value: emptyLines }] });
    await raw.send({ topic: topics.events, acks: -1, messages: [{ key: 'before-1', value: oversize }] });
    await raw.send({ topic: topics.events, acks: -1, messages: [{ key: 'before-2', value: garbage }] });
    // Schema-valid, dated about 270,000 years ahead, in a live session's partition.
    const future = { ...before[1]!, id: randomUUID(), ts: 8.6e15, seq: 99 } as QoeEvent;
    await prod.send(future);
    await prod.flush();

    const after = sessions('after', 20);
    for (const e of after) void prod.send(e);
    await prod.flush();

    const want = before.length + after.length;
    const r = await waitFor(
      async () => {
        const q = await qoe(agg.url, { by: 'all', window: '1s' });
        const t = q.totals[0];
        return t && t.events === want ? q : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 200, what: `${want} good events counted` },
    );
    expect(r.totals[0]!.sessions).toBe(40);
    expect(r.totals[0]!.late).toBe(0);
    // The watermark follows real event times, never the 8.6e15 one.
    for (const s of Object.values(agg.stats())) expect(s.watermark).toBeLessThan(Date.now() + 60_000);
    expect(r.windows.every((w) => w.start < Date.now() + 60_000)).toBe(true);

    await waitFor(allCommitted, { timeoutMs: 30_000, intervalMs: 200, what: 'every partition committed to its end' });
    await agg.publishNow();
    const report = await verify({ url: agg.url, brokers: brokers(), topics, ...WINDOW, finalOnly: true, messageLimits: LIMITS, log: quiet });
    expect(report.mismatches).toEqual([]);
    expect(report.events).toBe(want);
    expect(report.compared).toBeGreaterThan(0);

    const dlq = await readTopic(topics.dlq, 4);
    expect(dlq).toHaveLength(4);
    const bodies = dlq.map((d) => JSON.parse(d.value) as { reason: string; raw: string; shrunk?: boolean });
    const reasons = bodies.map((b) => b.reason).sort();
    expect(reasons).toEqual([
      expect.stringMatching(/^event time 8600000000000000 is \d+ s after its arrival \d+ \(max future skew 300 s\)$/),
      `message of ${Buffer.byteLength(oversize)} bytes is over the limit of 262144`,
      'message of 40000 lines is over the limit of 1000 events',
      expect.stringMatching(/^not JSON/),
    ]);
    const shrunk = bodies.find((b) => /^not JSON/.test(b.reason))!;
    expect(shrunk.shrunk).toBe(true);
    expect(shrunk.raw.length).toBe(256);

    const metrics = await (await fetch(`${agg.url}/metrics`)).text();
    expect(readMetric(metrics, 'ocdn_telemetry_dlq_total')).toBe(4);
    expect(readMetric(metrics, 'ocdn_telemetry_dlq_shrunk_total')).toBe(1);
    const h = await health(agg.url);
    expect(h.status).toBe(200);
    expect(h.body).toMatchObject({ ok: true, reason: null, stalled: [] });
  });

  it('a partition that cannot publish makes /healthz 503 with the reason, and recovers once it can', async () => {
    // An honest fault: the broker refuses every aggregates request as too large, so the windows
    // cannot be published and their offsets cannot be committed.
    const aggConfig = { 'cleanup.policy': 'compact,delete', 'retention.ms': String(24 * 3600_000), 'segment.ms': '600000', 'min.cleanable.dirty.ratio': '0.2' };
    await alterTopic(topics.aggregates, { ...aggConfig, 'max.message.bytes': '64' });
    const stuck = sessions('stuck', 10);
    for (const e of stuck) void prod.send(e);
    await prod.flush();
    const sick = await waitFor(
      async () => {
        const h = await health(agg.url);
        return h.status === 503 ? h : undefined;
      },
      { timeoutMs: STALL_MS + 20_000, intervalMs: 200, what: '/healthz 503 for a stalled partition' },
    );
    expect(sick.body.ok).toBe(false);
    expect(sick.body.reason).toMatch(/^partition \d+ made no progress for \d+ s with \d+ messages of lag/);
    expect(sick.body.stalled.length).toBeGreaterThan(0);
    // Still up and answering while stalled.
    expect((await fetch(`${agg.url}/v1/qoe?by=all&window=1s`)).status).toBe(200);

    await alterTopic(topics.aggregates, aggConfig);
    await waitFor(async () => (await health(agg.url)).status === 200, { timeoutMs: 30_000, intervalMs: 200, what: '/healthz ok again' });
    await waitFor(async () => (await qoe(agg.url, { by: 'all', window: '1s' })).totals[0]?.sessions === 50, {
      timeoutMs: 30_000,
      intervalMs: 200,
      what: 'the stalled sessions counted once the broker takes aggregates again',
    });
    await waitFor(allCommitted, { timeoutMs: 30_000, intervalMs: 200, what: 'every partition committed to its end' });
  }, 90_000);
});

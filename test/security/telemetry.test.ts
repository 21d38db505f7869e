/**
 * Issue 12, findings 3 and 4: messages and events that used to stall a partition or empty the
 * QoE view, against the real broker of the global setup. Each case asserts what lands in the
 * DLQ, that the aggregates still equal a recount of the raw topic, that new sessions show up,
 * that every partition keeps committing, and what /healthz says. Finding 5: a spill on a 64 KB
 * tmpfs (or, without the right to mount, a 64 KiB byte cap), where every event is delivered or
 * counted as lost in the summary.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { connect, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigResourceTypes, type Producer } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../common/http.ts';
import { createLogger } from '../../common/log.ts';
import { readMetric } from '../../common/metrics.ts';
import { startAggregator, type AggregatorHandle } from '../../telemetry/aggregator.ts';
import type { QoeEvent } from '../../telemetry/events.ts';
import { createKafka } from '../../telemetry/kafka.ts';
import type { TopicNames } from '../../telemetry/topics.ts';
import { createProducer, type KafkaEventProducer } from '../../telemetry/producer.ts';
import { verify } from '../../telemetry/verify.ts';
import { brokers, freshTopics, qoe, readTopic } from '../telemetry/helpers.ts';
import { cliEnv, runCli } from '../cli-run.ts';
import { freePorts } from '../../common/ports.ts';
import type { RunSummary } from '../../player-sim/runner.ts';

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

/** A plain TCP forwarder on `port` to the broker: "the broker is back" for a producer given that port. */
async function forwardTo(port: number, target: string): Promise<Server> {
  const [host, tport] = target.split(',')[0]!.split(':');
  const server = createServer((c) => {
    const u = connect(Number(tport), host);
    c.pipe(u).pipe(c);
    c.on('error', () => u.destroy());
    u.on('error', () => c.destroy());
  });
  await new Promise<void>((res, rej) => {
    server.once('error', rej);
    server.listen(port, '127.0.0.1', () => res());
  });
  return server;
}

describe('a spill you can trust', () => {
  let dir: string;
  let tiny: string;
  let mounted = false;
  const CAP = 64 * 1024;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ocdn-sec-spill-'));
    tiny = join(dir, 'tiny');
    await mkdir(tiny);
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${CAP}`, 'tmpfs', tiny], { stdio: 'ignore' });
      mounted = true;
    } catch {
      mounted = false; // not root: the byte cap stands in for the full disk
    }
  });

  afterAll(async () => {
    if (mounted) execFileSync('umount', ['--lazy', tiny], { stdio: 'ignore' });
    await rm(dir, { recursive: true, force: true });
  });

  const heartbeats = (n: number) => sessions(`spill-${randomBytes(3).toString('hex')}`, Math.ceil(n / 5)).slice(0, n);

  it('the spill disk fills while the broker is away: nothing torn, nothing lost, all delivered once it is back', async () => {
    const topics = await freshTopics('sec-spill');
    const [port] = await freePorts(1);
    const spillFile = join(tiny, 'full.jsonl');
    const prod = createProducer({
      brokers: `127.0.0.1:${port}`,
      topic: topics.events,
      spillFile,
      lingerMs: 5,
      retryMs: 200,
      ...(mounted ? {} : { maxSpillBytes: CAP }),
      log: quiet,
    });
    let forwarder: Server | undefined;
    try {
      const first = heartbeats(1_000);
      const outcomes = first.map((e) =>
        prod.send(e).then(
          () => 'ok',
          (err: Error) => err.message,
        ),
      );
      // All 1000 accepted: the disk took what it could, the rest wait in memory.
      await waitFor(() => prod.backlog().spill + prod.backlog().memory === 1_000 && prod.backlog().memory > 0 && prod.backlog().spill > 0, {
        timeoutMs: 30_000,
        what: 'spill full and the rest held in memory',
      });
      const lines = readFileSync(spillFile, 'utf8').split('\n');
      expect(lines.pop()).toBe(''); // ends on a whole line
      for (const l of lines) expect(() => JSON.parse(l)).not.toThrow();
      expect(lines.length).toBe(prod.backlog().spill);
      expect(Buffer.byteLength(lines.join('\n'))).toBeLessThanOrEqual(CAP);

      // Take the last free bytes too, so saving the replay offset meets ENOSPC as well.
      const filler = join(tiny, 'filler');
      if (mounted) {
        try {
          writeFileSync(filler, Buffer.alloc(CAP));
        } catch (err) {
          expect((err as NodeJS.ErrnoException).code).toBe('ENOSPC');
        }
        expect(() => writeFileSync(join(tiny, 'probe'), 'x')).toThrow(/ENOSPC/);
      }

      forwarder = await forwardTo(port!, brokers());
      expect(new Set(await Promise.all(outcomes))).toEqual(new Set(['ok']));
      const second = heartbeats(100);
      await Promise.all(second.map((e) => prod.send(e)));
      expect(await prod.drain(60_000)).toBe(true);
      expect(prod.lost()).toEqual({});
      const got = await readTopic(topics.events, 1_100, brokers(), 60_000, (v) => (JSON.parse(v) as QoeEvent).id);
      const ids = new Set(got.map((m) => (JSON.parse(m.value) as QoeEvent).id));
      for (const e of [...first, ...second]) expect(ids.has(e.id)).toBe(true);
      await rm(filler, { force: true });
    } finally {
      await prod.close();
      await new Promise((r) => (forwarder ? forwarder.close(r) : r(undefined)));
    }
  }, 90_000);

  it('a torn last line left by a crash mid-write is cut off and counted lost, never replayed as garbage', async () => {
    const [dead] = await freePorts(1);
    const spillFile = join(dir, 'torn.jsonl');
    const good = heartbeats(2).map((e) => JSON.stringify(e));
    writeFileSync(spillFile, `${good.join('\n')}\n${good[0]!.slice(0, 40)}`);
    const prod = createProducer({ brokers: `127.0.0.1:${dead}`, spillFile, retryMs: 60_000, closeTimeoutMs: 100, log: quiet });
    try {
      await waitFor(() => prod.backlog().spill === 2, { timeoutMs: 10_000, what: 'the two whole lines queued for replay' });
      expect(prod.lost()).toEqual({ 'torn line in the spill file': 1 });
    } finally {
      await prod.close();
    }
    expect(readFileSync(spillFile, 'utf8')).toBe(`${good.join('\n')}\n`);
  });

  it('ocdn play with the broker away and a tiny --spill-dir: summary printed, every event spilled or counted lost, exit 1', async () => {
    const env = cliEnv({ logLevel: 'error', unset: ['KAFKA_BROKERS'] });
    const args = ['play', '--virtual', '--players', '20', '--duration', '30s', '--seed', '7', '--json'];
    const eventsFile = join(dir, 'all.jsonl');
    const all = await runCli([...args, '--events-file', eventsFile], env);
    expect(all.code).toBe(0);
    const total = readFileSync(eventsFile, 'utf8').trim().split('\n').length;

    const [dead] = await freePorts(1);
    const spillDir = join(tiny, 'play');
    const r = await runCli([...args, '--brokers', `127.0.0.1:${dead}`, '--spill-dir', spillDir, ...(mounted ? [] : ['--spill-max-bytes', String(CAP)])], env);
    expect(r.code).toBe(1);
    const summary = JSON.parse(r.stdout) as RunSummary;
    const lost = Object.values(summary.eventsLost).reduce((a, b) => a + b, 0);
    expect(lost).toBeGreaterThan(0);
    expect(Object.keys(summary.eventsLost)).toEqual([
      mounted ? 'unsent at close: broker unreachable, spill write failed: ENOSPC' : 'unsent at close: broker unreachable, spill full',
    ]);
    expect(summary.sinkErrors).toBe(0);
    expect(r.stderr).toContain(`QoE events not all delivered: ${lost} lost, 0 sink errors`);
    const spilled = readFileSync(join(spillDir, 'ocdn-play.jsonl'), 'utf8').trim().split('\n');
    expect(spilled.length + lost).toBe(total);

    // What the spill kept is delivered by the next producer using it, once a broker answers.
    const topics = await freshTopics('sec-play');
    const next = createProducer({ brokers: brokers(), topic: topics.events, spillFile: join(spillDir, 'ocdn-play.jsonl'), lingerMs: 5, log: quiet });
    try {
      expect(await next.drain(60_000)).toBe(true);
    } finally {
      await next.close();
    }
    // Counted and compared by id: a replay the broker took but did not acknowledge in time is sent again.
    const eventId = (value: string) => (JSON.parse(value) as QoeEvent).id;
    const delivered = new Set((await readTopic(topics.events, spilled.length, brokers(), 60_000, eventId)).map((m) => eventId(m.value)));
    expect(delivered).toEqual(new Set(spilled.map((l) => (JSON.parse(l) as QoeEvent).id)));
  }, 120_000);
});

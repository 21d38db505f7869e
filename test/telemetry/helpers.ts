import { randomBytes, randomUUID } from 'node:crypto';
import { inject } from 'vitest';
import { waitFor } from '../../common/http.ts';
import { createKafka, ensureTopics } from '../../telemetry/kafka.ts';
import { topicNames, type TopicNames } from '../../telemetry/topics.ts';
import type { QoeEvent } from '../../telemetry/events.ts';
import type { KafkaEventProducer } from '../../telemetry/producer.ts';
import type { QoeResponse } from '../../common/contracts.ts';

/** The broker the global setup started (or KAFKA_BROKERS). */
export function brokers(): string {
  const b = inject('kafkaBrokers');
  if (!b) throw new Error('no Kafka broker for this run: test/kafka-global-setup.ts did not start one');
  return b;
}

/** Topic names no other test uses, created on the broker. */
export async function freshTopics(label: string, brokerList = brokers()): Promise<TopicNames> {
  const topics = topicNames(`t-${label}-${randomBytes(4).toString('hex')}.`);
  await ensureTopics(brokerList, { topics });
  return topics;
}

/**
 * Reads a topic from the beginning until `count` distinct events (not messages) arrived. A reader
 * that rebalances is handed some messages again, so redeliveries (same partition and offset) are
 * dropped; `distinct` narrows further, e.g. to event ids when the producer itself may resend.
 */
export async function readTopic(
  topic: string,
  count: number,
  brokerList = brokers(),
  timeoutMs = 60_000,
  distinct?: (value: string) => string,
): Promise<{ key: string | null; value: string; headers: Record<string, string>; partition: number }[]> {
  const kafka = createKafka({ brokers: brokerList.split(','), clientId: 'test-reader' });
  const consumer = kafka.consumer({ groupId: `test-reader-${randomBytes(4).toString('hex')}`, maxWaitTimeInMs: 100 });
  const out: { key: string | null; value: string; headers: Record<string, string>; partition: number }[] = [];
  const seen = new Set<string>();
  await consumer.connect();
  try {
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    await consumer.run({
      eachMessage: async ({ message, partition }) => {
        const headers: Record<string, string> = {};
        for (const [k, v] of Object.entries(message.headers ?? {})) headers[k] = String(v);
        // Packed messages carry several newline-separated events: one entry per event.
        const values = (message.value?.toString() ?? '').split('\n');
        values.forEach((value, i) => {
          const key = distinct ? distinct(value) : `${partition}:${message.offset}:${i}`;
          if (seen.has(key)) return;
          seen.add(key);
          out.push({ key: message.key?.toString() ?? null, value, headers, partition });
        });
      },
    });
    await waitFor(() => out.length >= count, { timeoutMs, what: `${count} distinct events on ${topic} (have ${out.length})` });
  } finally {
    await consumer.disconnect();
  }
  return out;
}

/**
 * Heartbeat events over `sessions` sessions, sent in bursts through a producer; `acked` holds the
 * ids whose send() resolved (in Kafka or in the spill file), i.e. what must never be lost.
 */
export function ackedEmitter(prod: Pick<KafkaEventProducer, 'send'>, sessions: number): { acked: Set<string>; emit(count: number): Promise<void> } {
  const acked = new Set<string>();
  let seq = 0;
  const emit = async (count: number) => {
    await Promise.all(
      Array.from({ length: count }, () => {
        const i = seq++;
        const e = {
          v: 1,
          id: randomUUID(),
          type: 'heartbeat',
          ts: Date.now(),
          sessionId: `sess-${i % sessions}`,
          seq: i,
          title: 'T',
          edgeId: `e${i % 3}`,
          region: 'eu',
          isp: 'isp',
          device: 'tv',
          abr: 'bba',
          bufferS: 10,
          rendition: '730k',
          bitrate: 730_000,
          playedS: i,
        } as QoeEvent;
        return prod.send(e).then(() => void acked.add(e.id));
      }),
    );
  };
  return { acked, emit };
}

export async function qoe(url: string, params: Record<string, string>): Promise<QoeResponse> {
  const res = await fetch(`${url}/v1/qoe?${new URLSearchParams(params)}`);
  if (!res.ok) throw new Error(`GET /v1/qoe → ${res.status}: ${await res.text()}`);
  return (await res.json()) as QoeResponse;
}

// ---- the synthetic event set ---------------------------------------------------------------

/** A minute boundary, so every event below falls in one 1-minute rollup window. */
export const T0 = 1_700_000_040_000;

/**
 * T0 is years before the broker stamps these events: an aggregator (and its recount) replaying
 * the data set lets events that old in, one day more than T0's age; the default refuses events
 * over a week older than their arrival (telemetry/validate.ts eventTimeProblem).
 */
export const T0_EVENT_TIME = { maxEventAgeMs: Date.now() - T0 + 24 * 3600_000 };

type Dims = { title: string; edgeId: string; region: string; isp: string; device: string; abr: string };

function session(sessionId: string, dims: Dims) {
  let seq = 0;
  return <T extends QoeEvent['type']>(type: T, atMs: number, fields: Record<string, unknown> = {}): QoeEvent =>
    ({ v: 1, id: randomUUID(), type, ts: T0 + atMs, sessionId, seq: seq++, ...dims, ...fields }) as unknown as QoeEvent;
}

export interface Dataset {
  /** Phase 1: on-time events and duplicates, in order. */
  main: QoeEvent[];
  /** Phase 2: pushes the watermark of session L's partition to T0 + 30 s. */
  advance: QoeEvent[];
  /** Phase 3: events for window 0 of session L's partition, now closed. */
  late: QoeEvent[];
  /** Raw invalid messages, with the reason the DLQ must carry. */
  invalid: { value: string; reason: RegExp }[];
  vstValues: number[];
}

/**
 * Sessions with stalls, switches, an error exit, a start failure, an exit before start, 99
 * startups for percentiles, three duplicates, two late events and three invalid messages.
 * The hand-computed results are in EXPECTED below.
 */
export function dataset(tag = randomBytes(3).toString('hex')): Dataset {
  const s1 = session(`${tag}-s1`, { title: 'A', edgeId: 'e1', region: 'eu', isp: 'isp1', device: 'tv', abr: 'bba' });
  const s2 = session(`${tag}-s2`, { title: 'A', edgeId: 'e2', region: 'us', isp: 'isp2', device: 'mobile', abr: 'throughput' });
  const s3 = session(`${tag}-s3`, { title: 'B', edgeId: 'e1', region: 'eu', isp: 'isp1', device: 'mobile', abr: 'bba' });
  const s4 = session(`${tag}-s4`, { title: 'B', edgeId: '', region: 'us', isp: 'isp2', device: 'tv', abr: 'bba' });
  const sl = session(`${tag}-late`, { title: 'D', edgeId: 'e4', region: 'sa', isp: 'isp4', device: 'web', abr: 'bba' });
  const seg = (bytes: number, ttfbMs: number, cacheStatus: string) => ({
    rendition: '2000k',
    bitrate: 2_000_000,
    index: 0,
    bytes,
    ttfbMs,
    downloadMs: 40,
    throughputBps: 8e6,
    cacheStatus,
  });

  const s1Startup = s1('startup', 600, { vstMs: 500, rendition: '2000k', bitrate: 2_000_000 });
  const s1Hit = s1('segment', 1_000, seg(1_000, 10, 'HIT'));
  const s2Start = s2('session_start', 200);
  const main: QoeEvent[] = [
    s1('session_start', 100),
    s1Startup,
    s1Hit,
    s1('segment', 2_000, seg(2_000, 30, 'MISS')),
    s1('stall_start', 3_000, { bufferS: 0 }),
    s1('stall_end', 4_500, { stallMs: 1_500 }),
    s1('switch', 5_000, { from: '2000k', to: '1100k', fromBitrate: 2_000_000, toBitrate: 1_100_000 }),
    s1('session_end', 9_000, { playedS: 8, stalledS: 1.5, avgBitrate: 2_000_000, switches: 1, started: true, exitReason: 'completed', bytes: 3_000 }),
    s2Start,
    s2('startup', 1_700, { vstMs: 1_500, rendition: '2000k', bitrate: 2_000_000 }),
    s2('segment', 2_000, seg(500, 20, 'HIT')),
    s2('error', 3_000, { code: 'E_HTTP_502', message: 'bad gateway', fatal: false }),
    s2('failover', 3_500, { fromEdge: 'e2', toEdge: 'e1', reason: '502' }),
    s2('segment', 4_000, seg(700, 20, 'STALE')),
    s2('heartbeat', 12_000, { bufferS: 10, rendition: '2000k', bitrate: 2_000_000, playedS: 11 }),
    s2('error', 14_900, { code: 'E_FATAL', message: 'all edges failed', fatal: true }),
    s2('session_end', 15_000, { playedS: 12, stalledS: 0, avgBitrate: 1_000_000, switches: 0, started: true, exitReason: 'error', bytes: 1_200 }),
    s3('session_start', 1_000),
    s3('session_end', 2_000, { playedS: 0, stalledS: 0, avgBitrate: 0, switches: 0, started: false, exitReason: 'start-failure', bytes: 0 }),
    s4('session_start', 11_000),
    s4('session_end', 12_000, { playedS: 0, stalledS: 0, avgBitrate: 0, switches: 0, started: false, exitReason: 'aborted', bytes: 0 }),
    sl('session_start', 5_000),
  ];
  const vstValues: number[] = [];
  for (let i = 1; i <= 99; i++) {
    const sx = session(`${tag}-v${i}`, { title: 'C', edgeId: 'e3', region: 'ap', isp: 'isp3', device: 'web', abr: 'bola' });
    main.push(sx('session_start', 10_000 + i * 50));
    main.push(sx('startup', 10_000 + i * 50 + 10, { vstMs: i * 100, rendition: '730k', bitrate: 730_000 }));
    vstValues.push(i * 100);
  }
  // Duplicates: the same events (same ids) delivered again, as an at-least-once producer may.
  main.push({ ...s1Startup }, { ...s1Hit }, { ...s2Start });
  // In event-time order (stable: a duplicate follows its original), so no on-time event is
  // produced after one that already closed its window's partition watermark.
  main.sort((a, b) => a.ts - b.ts);

  const advance = [sl('heartbeat', 30_000, { bufferS: 5, rendition: '2000k', bitrate: 2_000_000, playedS: 25 })];
  const late = [sl('stall_start', 6_000, { bufferS: 0 }), sl('error', 7_000, { code: 'E_X', message: 'late', fatal: false })];
  const env = { v: 1, ts: T0 + 1_000, sessionId: `${tag}-bad`, seq: 0, title: 'A', edgeId: 'e1', region: 'eu', isp: 'isp1', device: 'tv', abr: 'bba' };
  const invalid = [
    { value: 'not json{', reason: /not JSON/ },
    { value: JSON.stringify({ ...env, id: randomUUID(), type: 'startup', vstMs: 'fast', rendition: 'x', bitrate: 1 }), reason: /vstMs must be number/ },
    { value: JSON.stringify({ ...env, id: randomUUID(), type: 'bogus' }), reason: /unknown event type "bogus"/ },
  ];
  return { main, advance, late, invalid, vstValues };
}

/** Hand-computed from the dataset above (see the comments in dataset()). */
export const EXPECTED = {
  all: {
    events: 221, // s1 8 + s2 9 + s3 2 + s4 2 + 99×2 + late-session 2 on-time
    duplicates: 3,
    late: 2,
    sessions: 104,
    startups: 101,
    sessionEnds: 4,
    startFailures: 1,
    exitsBeforeStart: 1,
    errorRate: 2 / 4, // s2 ended by error + s3 start failure
    playS: 20,
    stallS: 1.5,
    rebufferRatio: 1.5 / 21.5,
    stalls: 1,
    stallsPerMin: 1 / (20 / 60),
    avgBitrate: (2e6 * 8 + 1e6 * 12) / 20,
    switches: 1,
    switchesPerMin: 1 / (20 / 60),
    errors: 2,
    fatalErrors: 1,
    failovers: 1,
    segments: 4,
    cacheHitRatio: 3 / 4,
    segmentBytes: 4_200,
    vstMeanMs: (500 + 1_500 + 495_000) / 101,
  },
  byEdge: {
    e1: { events: 10, sessions: 2, sessionEnds: 2, startFailures: 1, segments: 2, duplicates: 2, late: 0 },
    e2: { events: 9, sessions: 1, sessionEnds: 1, errors: 2, failovers: 1, segments: 2, duplicates: 1 },
    '': { events: 2, sessions: 1, exitsBeforeStart: 1 },
    e3: { events: 198, sessions: 99, startups: 99 },
    e4: { events: 2, sessions: 1, late: 2 },
  } as Record<string, Record<string, number>>,
  byRegion: { eu: 10, us: 11, ap: 198, sa: 2 } as Record<string, number>,
  windows: [
    { start: T0, events: 17, duplicates: 3, late: 2 },
    { start: T0 + 10_000, events: 203, duplicates: 0, late: 0 },
    { start: T0 + 30_000, events: 1, duplicates: 0, late: 0 },
  ],
};

/** The exact quantile DDSketch approximates: a value at rank q·(n−1), either side. */
export function exactQuantiles(values: number[], q: number): [number, number] {
  const s = [...values].sort((a, b) => a - b);
  const r = q * (s.length - 1);
  return [s[Math.floor(r)]!, s[Math.ceil(r)]!];
}

/** Produces the data set in its three phases, each flushed before the next so the order holds. */
export async function produceDataset(prod: KafkaEventProducer, d: Dataset): Promise<void> {
  for (const e of d.main) void prod.send(e);
  await prod.flush();
  for (const e of d.advance) void prod.send(e);
  await prod.flush();
  for (const e of d.late) void prod.send(e);
  for (const bad of d.invalid) void prod.sendRaw(bad.value, 'bad-key');
  await prod.flush();
}

/** Waits until windows 0 and 1 are final everywhere and every expected event is counted. */
export async function settled(url: string): Promise<QoeResponse> {
  let seen = 'nothing yet';
  try {
    return await waitFor(
      async () => {
        const r = await qoe(url, { by: 'all', window: '10s' });
        seen = r.windows
          .map(
            (w) => `${(w.start - T0) / 1000}s ${w.final ? 'final' : 'open'} events=${w.rows[0]!.events} dup=${w.rows[0]!.duplicates} late=${w.rows[0]!.late}`,
          )
          .join('; ');
        const w0 = r.windows.find((w) => w.start === T0);
        const w1 = r.windows.find((w) => w.start === T0 + 10_000);
        const t = r.totals[0];
        return w0?.final && w1?.final && t?.events === EXPECTED.all.events && t.late === EXPECTED.all.late ? r : undefined;
      },
      { timeoutMs: 90_000, intervalMs: 200, what: 'windows 0 and 1 closed with every event counted' },
    );
  } catch (err) {
    throw new Error(`${(err as Error).message}; last seen: ${seen}`);
  }
}

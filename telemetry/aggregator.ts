/**
 * The QoE aggregator: a consumer group over the events topic (eachBatch), one PartitionWindows
 * engine per assigned partition, partial aggregates upserted to the compacted aggregates topic,
 * invalid events to the DLQ, offsets committed only once everything they feed is acknowledged
 * by the broker. Every instance also reads the whole aggregates topic into an AggregateView
 * and answers /v1/qoe from it, so any instance gives the merged answer of all of them.
 */
import { randomBytes } from 'node:crypto';
import type { Server } from 'node:http';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { Partitioners, type Consumer, type EachBatchPayload, type Kafka, type Message, type Producer } from 'kafkajs';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { describeError, ErrorCodes, OcdnError } from '../common/errors.ts';
import { closeServer, listen } from '../common/http.ts';
import { type CorsOrigins, corsPolicy } from '../common/cors.ts';
import { createHardenedServer } from '../common/http-server.ts';
import { createLogger, type Logger } from '../common/log.ts';
import { createRegistry } from '../common/metrics.ts';
import { aggregatorRoutes, qoeResponse } from './aggregator-http.ts';
import { createIngest, type Ingest, type IngestRate, type RefusedEvent } from './ingest.ts';
import { createKafka, ensureTopics } from './kafka.ts';
import { parseBrokers, topicNames, type TopicNames } from './topics.ts';
import { watchConsumer } from './consumer-watchdog.ts';
import { createMissStream, type MissStream } from './miss-stream.ts';
import { createProducer, type KafkaEventProducer } from './producer.ts';
import { QoeStreams } from './qoe-stream.ts';
import { defaultEventTimeBounds, defaultMessageLimits, eventTimeProblem, parseMessage, type EventTimeBounds, type MessageLimits } from './validate.ts';
import { AggregateView, isRecord } from './view.ts';
import { defaultWindowOptions, partialKey, PartitionWindows, type PartialRecord, type WindowOptions } from './windows.ts';

export interface AggregatorOptions extends Partial<WindowOptions> {
  brokers?: string | string[];
  topics?: TopicNames;
  groupId?: string;
  /** HTTP port on `host` (0 = any free port). */
  port?: number;
  host?: string;
  /** Read the events topic from the start when the group has no committed offsets. */
  fromBeginning?: boolean;
  /** Create the topics when missing (default true). */
  createTopics?: boolean;
  /** Minimum ms between housekeeping passes (idle watermark, provisional publish, retries). */
  tickMs?: number;
  /** How long the read side keeps windows in memory. */
  viewRetentionMs?: number;
  /** Most events / bytes in one events-topic message; past either it is one DLQ record. */
  messageLimits?: Partial<MessageLimits>;
  /** Events dated too far after or before their message's broker timestamp go to the DLQ. */
  eventTime?: Partial<EventTimeBounds>;
  /** /healthz turns 503 when an owned partition has lag and its committed offset has not moved for this long. */
  stallMs?: number;
  /** A consumer (events or view) behind its topic's end that reads nothing for this long is restarted (default 30 s). */
  recoverMs?: number;
  /** Most bytes of DLQ records in one produce request (under the broker's message.max.bytes). */
  dlqRequestBytes?: number;
  /** Join steering decisions with edge access records into miss-class bytes (default on). */
  misses?: boolean;
  /** POST /v1/events for browser beacons (default on); false turns it off (404). */
  ingest?: boolean;
  /** Request rates of the ingest, per client address and in all. */
  ingestRate?: Partial<IngestRate>;
  /** Where the ingest's producer spills while the broker is unreachable (as `ocdn play --spill-dir`). Default .ocdn/spill */
  spillDir?: string;
  /** Cap on that spill file. Default 1 GiB. */
  spillMaxBytes?: number;
  /** Pages allowed to read answers and post beacons (CORS): '*' (default) or exact origins (common/cors.ts). */
  corsOrigins?: CorsOrigins;
  /** GET /v1/qoe/stream bounds and cadence (contracts QOE_STREAM). */
  stream?: { maxStreams?: number; intervalMs?: number; heartbeatMs?: number };
  log?: Logger;
  registry?: Registry;
}

/** DLQ records kept for one message; the rest of its bad lines are summed up in one more record. */
const DLQ_PER_MESSAGE = 10;
/** The raw text a DLQ record keeps, and what is left of it when the broker refuses the record as too large. */
const DLQ_RAW_CHARS = 16_384;
const DLQ_SHRUNK_CHARS = 256;
/** DLQ records waiting for the broker; past this the oldest are dropped (counted) rather than held in memory. */
const DLQ_BACKLOG = 20_000;
/** Passes where aggregates went out but the DLQ did not, before its records are shrunk and then dropped. */
const DLQ_ATTEMPTS = 3;

export interface AggregatorHandle {
  url: string;
  port: number;
  view: AggregateView;
  registry: Registry;
  /** Partitions of the events topic this instance owns right now. */
  assigned(): number[];
  /** Per-partition engine stats (added, duplicates, late, …). */
  stats(): Record<number, PartitionWindows['stats'] & { watermark: number; openWindows: number; next: number }>;
  /** Publishes every open window now (final=false); for tests and `verify`. */
  publishNow(): Promise<void>;
  close(): Promise<void>;
}

/** DLQ records waiting for the broker: one queue per partition, and one for the ingest. */
interface DlqQueue {
  pendingDlq: Message[];
  /** Passes in a row where the broker answered but did not take the DLQ. */
  dlqFailures: number;
  lock: Promise<void>;
}

interface PartitionState extends DlqQueue {
  engine: PartitionWindows;
  pendingRecords: PartialRecord[];
  committed: number;
}

/** Spill files taken by ingests of this process (the producer's lock only tells processes apart). */
const spillFilesInUse = new Set<string>();

function createMetrics(registry: Registry) {
  return {
    events: new Counter({
      name: 'ocdn_telemetry_events_total',
      help: 'Events read, by result (added, duplicate, late, replayed, invalid)',
      labelNames: ['result'],
      registers: [registry],
    }),
    late: new Counter({
      name: 'ocdn_telemetry_late_events_total',
      help: 'Events that arrived after their window closed (counted, not merged)',
      registers: [registry],
    }),
    dlq: new Counter({ name: 'ocdn_telemetry_dlq_total', help: 'Invalid events sent to the DLQ', registers: [registry] }),
    rate: new Gauge({ name: 'ocdn_telemetry_events_per_second', help: 'Events read per second over the last few seconds', registers: [registry] }),
    lag: new Gauge({
      name: 'ocdn_telemetry_consumer_lag',
      help: 'Messages behind the high watermark, per partition',
      labelNames: ['partition'],
      registers: [registry],
    }),
    freshness: new Histogram({
      name: 'ocdn_telemetry_freshness_seconds',
      help: 'Event time to its aggregate being published (sampled events)',
      buckets: [0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 10, 12, 15, 20, 30, 60, 120],
      registers: [registry],
    }),
    records: new Counter({
      name: 'ocdn_telemetry_records_published_total',
      help: 'Partial aggregates upserted to the aggregates topic',
      labelNames: ['final'],
      registers: [registry],
    }),
    windowsClosed: new Counter({ name: 'ocdn_telemetry_windows_closed_total', help: 'Partition windows closed by the watermark', registers: [registry] }),
    openWindows: new Gauge({ name: 'ocdn_telemetry_open_windows', help: 'Open partition windows', registers: [registry] }),
    assigned: new Gauge({ name: 'ocdn_telemetry_partitions_assigned', help: 'Events-topic partitions owned by this instance', registers: [registry] }),
    viewRecords: new Gauge({ name: 'ocdn_telemetry_view_records', help: 'Partial aggregates held by the read side', registers: [registry] }),
    publishErrors: new Counter({
      name: 'ocdn_telemetry_publish_errors_total',
      help: 'Failed publishes of aggregates or DLQ messages (retried)',
      registers: [registry],
    }),
    commits: new Counter({ name: 'ocdn_telemetry_commits_total', help: 'Offset commits', registers: [registry] }),
    consumerRestarts: new Counter({
      name: 'ocdn_telemetry_consumer_restarts_total',
      help: 'Consumers restarted by the watchdog (crashed for good, or behind and reading nothing), by consumer',
      labelNames: ['consumer'],
      registers: [registry],
    }),
    dlqDropped: new Counter({
      name: 'ocdn_telemetry_dlq_dropped_total',
      help: 'DLQ records given up on (the broker refused them even shrunk, or the backlog was full), by reason',
      labelNames: ['reason'],
      registers: [registry],
    }),
    dlqShrunk: new Counter({ name: 'ocdn_telemetry_dlq_shrunk_total', help: 'DLQ records resent with their raw text cut short', registers: [registry] }),
  };
}

/** True when the broker refused a request for its size (retrying it unchanged can never work). */
function isTooLarge(err: unknown): boolean {
  for (let e = err as { type?: unknown; cause?: unknown; retriable?: unknown; originalError?: unknown } | undefined, i = 0; e && i < 5; i++) {
    if (e.type === 'MESSAGE_TOO_LARGE' || e.type === 'RECORD_LIST_TOO_LARGE' || e.type === 'INVALID_RECORD') return true;
    e = (e.cause ?? e.originalError) as typeof e;
  }
  return /larger than the max message size|too large/i.test(describeError(err));
}

/** The DLQ record cut to a few hundred characters of raw text (reason and position kept). */
function shrinkDlq(msg: Message): Message {
  try {
    const body = JSON.parse(String(msg.value)) as { raw?: string };
    return { ...msg, value: JSON.stringify({ ...body, raw: (body.raw ?? '').slice(0, DLQ_SHRUNK_CHARS), shrunk: true }) };
  } catch {
    return { ...msg, value: String(msg.value).slice(0, DLQ_SHRUNK_CHARS) };
  }
}

function dlqBytes(msg: Message): number {
  return (msg.value === null ? 0 : Buffer.byteLength(msg.value)) + (msg.key ? Buffer.byteLength(msg.key) : 0) + 128;
}

/** The sessionId of a raw line that did not validate, to key its DLQ message like the event. */
function sessionIdOf(raw: string): string | undefined {
  try {
    const sid = (JSON.parse(raw) as { sessionId?: unknown }).sessionId;
    return typeof sid === 'string' ? sid : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The DLQ records of one message's (or one ingest batch's) refused events: each with its reason,
 * where it came from and its raw text, keyed by its sessionId; past DLQ_PER_MESSAGE the rest are
 * summed up by reason in one more record.
 */
function dlqMessages(refused: RefusedEvent[], where: Record<string, unknown>, key: Buffer | string | null, at: number, unit = 'message'): Message[] {
  const out: Message[] = [];
  const overflow = new Map<string, number>();
  for (let i = 0; i < refused.length; i++) {
    const { reason, raw } = refused[i]!;
    if (i >= DLQ_PER_MESSAGE) {
      const r = reason.replace(/\d+/g, 'N');
      overflow.set(r, (overflow.get(r) ?? 0) + 1);
      continue;
    }
    out.push({
      key: sessionIdOf(raw) ?? key,
      value: JSON.stringify({ reason, ...where, at, raw: raw.slice(0, DLQ_RAW_CHARS) }),
      headers: { 'ocdn-dlq-reason': reason.slice(0, 256) },
    });
  }
  if (overflow.size) {
    const reason = `${refused.length - DLQ_PER_MESSAGE} more invalid events in this ${unit}`;
    out.push({ key, value: JSON.stringify({ reason, reasons: Object.fromEntries(overflow), ...where, at }), headers: { 'ocdn-dlq-reason': reason } });
  }
  return out;
}

export async function startAggregator(opts: AggregatorOptions = {}): Promise<AggregatorHandle> {
  // ---- settings --------------------------------------------------------------------------
  const log = opts.log ?? createLogger('aggregator');
  const brokers = parseBrokers(opts.brokers);
  const topics = opts.topics ?? topicNames();
  const groupId = opts.groupId ?? 'ocdn-aggregator';
  const wopts: WindowOptions = {
    windowMs: opts.windowMs ?? defaultWindowOptions.windowMs,
    graceMs: opts.graceMs ?? defaultWindowOptions.graceMs,
    idleMs: opts.idleMs ?? defaultWindowOptions.idleMs,
    lateRetentionMs: opts.lateRetentionMs ?? defaultWindowOptions.lateRetentionMs,
    provisionalMs: opts.provisionalMs ?? defaultWindowOptions.provisionalMs,
  };
  if (wopts.windowMs < 100) throw new OcdnError(ErrorCodes.CONFIG, `--window ${wopts.windowMs} ms is too small (minimum 100 ms)`);
  if (60_000 % wopts.windowMs !== 0) log.warn({ windowMs: wopts.windowMs }, 'window does not divide a minute: 1 min rollups are unavailable');
  const tickMs = opts.tickMs ?? 250;
  const limits: MessageLimits = { ...defaultMessageLimits, ...opts.messageLimits };
  const timeBounds: EventTimeBounds = { ...defaultEventTimeBounds, ...opts.eventTime };
  const stallMs = opts.stallMs ?? 60_000;
  const recoverMs = opts.recoverMs ?? 30_000;
  const dlqRequestBytes = opts.dlqRequestBytes ?? 256 * 1024;
  const registry = opts.registry ?? createRegistry({ defaultMetrics: true });
  const m = createMetrics(registry);
  const view = new AggregateView({ retentionMs: opts.viewRetentionMs });
  const instance = `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;

  // ---- state -----------------------------------------------------------------------------
  const kafka: Kafka = createKafka({
    brokers,
    clientId: `ocdn-aggregator-${instance}`,
    log,
    retry: { retries: 8, initialRetryTime: 200, maxRetryTime: 5_000 },
  });

  // Not idempotent: a retried publish carries more records than the lost one, and kafkajs would
  // reuse its sequence numbers, so the broker would drop it as a duplicate (see producer.ts).
  // Records are whole-window upserts keyed by window|dimension|value|partition: a duplicate is harmless.
  const producer: Producer = kafka.producer({
    idempotent: false,
    maxInFlightRequests: 1,
    allowAutoTopicCreation: false,
    createPartitioner: Partitioners.DefaultPartitioner,
    retry: { retries: 3, initialRetryTime: 200, maxRetryTime: 2_000 },
  });
  const viewConsumer: Consumer = kafka.consumer({
    groupId: `${groupId}-view-${instance}`,
    maxWaitTimeInMs: 200,
    allowAutoTopicCreation: false,
    sessionTimeout: 30_000,
  });
  const consumer: Consumer = kafka.consumer({
    groupId,
    maxWaitTimeInMs: 200,
    maxBytesPerPartition: 4 << 20,
    allowAutoTopicCreation: false,
    sessionTimeout: 30_000,
    heartbeatInterval: 3_000,
  });
  const admin = kafka.admin();

  const parts = new Map<number, PartitionState>();
  const viewPos = new Map<number, number>();
  let closing = false;
  let ready = false;
  let lastRateAt = Date.now();
  let lastFetchAt = Date.now();
  const assignment = new Set<number>();
  let readSinceRate = 0;
  /** Per owned partition: lag and committed offset as the broker reports them, and when the offset last moved. */
  const progress = new Map<number, { lag: number; committed: number; since: number }>();

  // ---- handlers: read side ---------------------------------------------------------------
  const onViewBatch = async ({ batch }: EachBatchPayload) => {
    for (const msg of batch.messages) {
      if (msg.value === null) {
        if (msg.key) view.delete(msg.key.toString());
      } else {
        try {
          const r = JSON.parse(msg.value.toString()) as unknown;
          if (isRecord(r)) view.upsert(r);
        } catch {
          log.warn({ partition: batch.partition, offset: msg.offset }, 'unreadable record in the aggregates topic, ignored');
        }
      }
      viewPos.set(batch.partition, Number(msg.offset) + 1);
    }
    m.viewRecords.set(view.size);
  };

  /** Waits until the view holds everything in the aggregates topic as of now. */
  const viewCaughtUp = async (timeoutMs = 60_000) => {
    const deadline = Date.now() + timeoutMs;
    let offsets: Awaited<ReturnType<typeof admin.fetchTopicOffsets>> | undefined;
    while (!offsets) {
      try {
        offsets = await admin.fetchTopicOffsets(topics.aggregates);
      } catch (err) {
        // A topic created a moment ago can answer NOT_LEADER until its partitions are loaded.
        if (Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    for (;;) {
      const behind = offsets.filter((o) => Number(o.high) > Number(o.low) && (viewPos.get(o.partition) ?? Number(o.low)) < Number(o.high));
      if (behind.length === 0) return;
      if (Date.now() > deadline) {
        log.warn({ behind: behind.map((b) => b.partition) }, 'read side still catching up; continuing');
        return;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  };

  // ---- handlers: write side --------------------------------------------------------------
  const withLock = async <T>(st: { lock: Promise<void> }, fn: () => Promise<T>): Promise<T> => {
    const prev = st.lock;
    let release!: () => void;
    st.lock = new Promise<void>((r) => (release = r));
    await prev;
    try {
      return await fn();
    } finally {
      release();
    }
  };

  const stateFor = async (partition: number): Promise<PartitionState> => {
    let st = parts.get(partition);
    if (st) return st;
    // A partition new to us: its previous owner published and had its records acknowledged
    // before giving it up, so once the view has caught up we know every window it closed.
    await viewCaughtUp();
    st = parts.get(partition);
    if (st) return st;
    const restore = view.finalRecordsOf(partition, wopts.windowMs);
    st = {
      engine: new PartitionWindows(partition, wopts, restore),
      pendingRecords: [],
      pendingDlq: [],
      dlqFailures: 0,
      committed: -1,
      lock: Promise.resolve(),
    };
    parts.set(partition, st);
    log.info({ partition, restoredRecords: restore.length, watermark: st.engine.watermark }, 'partition assigned');
    return st;
  };

  /** Sends one DLQ request; on a size refusal each record again alone, then shrunk, then dropped (counted). */
  const sendDlqChunk = async (chunk: Message[]): Promise<void> => {
    try {
      await producer.send({ topic: topics.dlq, acks: -1, messages: chunk });
      m.dlq.inc(chunk.length);
      return;
    } catch (err) {
      if (!isTooLarge(err)) throw err;
      log.warn({ records: chunk.length, err: describeError(err) }, 'broker refused DLQ records as too large; resending them one by one');
    }
    for (const msg of chunk) {
      const tries = chunk.length > 1 ? [msg, shrinkDlq(msg)] : [shrinkDlq(msg)];
      let sent = false;
      for (const attempt of tries) {
        try {
          await producer.send({ topic: topics.dlq, acks: -1, messages: [attempt] });
          m.dlq.inc();
          if (attempt !== msg) m.dlqShrunk.inc();
          sent = true;
          break;
        } catch (err) {
          if (!isTooLarge(err)) throw err;
        }
      }
      if (!sent) {
        m.dlqDropped.inc({ reason: 'too large' });
        log.warn({ reason: msg.headers?.['ocdn-dlq-reason']?.toString() }, 'DLQ record refused even shrunk; dropped');
      }
    }
  };

  /**
   * Sends the partition's DLQ records in requests of at most dlqRequestBytes. True when none is
   * left (sent, or given up on with a counted reason): the partition may commit.
   */
  const publishDlq = async (partition: number | 'ingest' | 'misses', st: DlqQueue, brokerUp: boolean): Promise<boolean> => {
    while (st.pendingDlq.length) {
      let bytes = 0;
      let n = 0;
      while (n < st.pendingDlq.length && (n === 0 || bytes + dlqBytes(st.pendingDlq[n]!) <= dlqRequestBytes)) bytes += dlqBytes(st.pendingDlq[n++]!);
      try {
        await sendDlqChunk(st.pendingDlq.slice(0, n));
        st.pendingDlq.splice(0, n);
        st.dlqFailures = 0;
      } catch (err) {
        m.publishErrors.inc();
        // Only a broker that answers gets attempts counted: an outage holds the records, it never drops them.
        const answered = brokerUp || (err as { retriable?: unknown }).retriable === false;
        if (!answered || ++st.dlqFailures < DLQ_ATTEMPTS) {
          log.warn({ partition, err: describeError(err), pending: st.pendingDlq.length }, 'DLQ publish failed; will retry before committing');
          return false;
        }
        m.dlqDropped.inc({ reason: 'unavailable' }, st.pendingDlq.length);
        log.error(
          { partition, err: describeError(err), dropped: st.pendingDlq.length },
          `DLQ refused ${DLQ_ATTEMPTS} times while aggregates went out; its records are dropped so the partition keeps committing`,
        );
        st.pendingDlq = [];
        st.dlqFailures = 0;
      }
    }
    return true;
  };

  /** Publishes what is pending for the partition, then commits. Never throws: retried next tick. */
  const publishAndCommit = async (partition: number, st: PartitionState, now: number, force = false) => {
    // Idle time only counts while fetches succeed (see PartitionWindows.holdIdle).
    if (now - lastFetchAt > 3_000) st.engine.holdIdle(now);
    else st.engine.advance(now);
    const closedBefore = st.engine.stats.closedWindows;
    const { records, freshness } = st.engine.collect(now, force);
    m.windowsClosed.inc(st.engine.stats.closedWindows - closedBefore);
    if (records.length) st.pendingRecords.push(...records);
    let sent = false;
    try {
      if (st.pendingRecords.length) {
        const batch = st.pendingRecords;
        await producer.send({
          topic: topics.aggregates,
          acks: -1,
          messages: batch.map((r) => ({ key: partialKey(r), value: JSON.stringify(r) })),
        });
        st.pendingRecords = [];
        sent = true;
        let finals = 0;
        for (const r of batch) if (r.final) finals++;
        m.records.inc({ final: 'true' }, finals);
        m.records.inc({ final: 'false' }, batch.length - finals);
        const t = Date.now();
        for (const ts of freshness) m.freshness.observe(Math.max(0, (t - ts) / 1000));
      }
    } catch (err) {
      m.publishErrors.inc();
      log.warn(
        { partition, err: describeError(err), pending: st.pendingRecords.length + st.pendingDlq.length },
        'publish failed; will retry before committing',
      );
      return;
    }
    // The broker took the aggregates; the DLQ is published after them and cannot hold them back.
    if (!(await publishDlq(partition, st, sent))) return;
    const offset = st.engine.commitOffset();
    if (offset !== undefined && offset > st.committed && parts.get(partition) === st) {
      try {
        await consumer.commitOffsets([{ topic: topics.events, partition, offset: String(offset) }]);
        st.committed = offset;
        m.commits.inc();
      } catch (err) {
        log.warn({ partition, offset, err: describeError(err) }, 'offset commit failed; will retry');
      }
    }
  };

  const queueDlq = (st: DlqQueue, msg: Message) => {
    if (st.pendingDlq.length >= DLQ_BACKLOG) {
      st.pendingDlq.shift();
      m.dlqDropped.inc({ reason: 'backlog full' });
    }
    st.pendingDlq.push(msg);
  };

  const eachBatch = async ({ batch, resolveOffset, heartbeat, isRunning, isStale }: EachBatchPayload) => {
    const st = await stateFor(batch.partition);
    await withLock(st, async () => {
      const now = Date.now();
      const eng = st.engine;
      let n = 0;
      let nextBeat = 20_000;
      // Counted locally and added to the metrics once per batch: label lookups per event cost more than the events.
      const counts = { added: 0, duplicate: 0, late: 0, replayed: 0, invalid: 0 };
      for (const msg of batch.messages) {
        if (!isRunning() || isStale()) break;
        const offset = Number(msg.offset);
        if (offset < eng.next) {
          resolveOffset(msg.offset);
          continue;
        }
        const arrival = Number(msg.timestamp);
        let refused: RefusedEvent[] | undefined;
        for (const v of parseMessage(msg.value, limits)) {
          n++;
          let reason: string;
          let raw: string;
          if (v.ok) {
            const problem = Number.isFinite(arrival) && arrival > 0 ? eventTimeProblem(v.event.ts, arrival, timeBounds) : undefined;
            if (problem === undefined) {
              counts[eng.add(v.event, offset, now)]++;
              continue;
            }
            reason = problem;
            raw = JSON.stringify(v.event);
          } else {
            reason = v.reason;
            raw = v.raw;
          }
          counts.invalid++;
          (refused ??= []).push({ reason, raw });
        }
        if (refused)
          for (const d of dlqMessages(refused, { topic: batch.topic, partition: batch.partition, offset: msg.offset }, msg.key, now)) queueDlq(st, d);
        eng.skip(offset);
        resolveOffset(msg.offset);
        if (n >= nextBeat) {
          nextBeat = n + 20_000;
          await heartbeat();
        }
      }
      readSinceRate += n;
      m.lag.set({ partition: String(batch.partition) }, Number(batch.offsetLag()));
      for (const [result, c] of Object.entries(counts)) if (c > 0) m.events.inc({ result }, c);
      if (counts.late > 0) m.late.inc(counts.late);
      m.openWindows.set([...parts.values()].reduce((s, p) => s + p.engine.openWindows, 0));
      await publishAndCommit(batch.partition, st, Date.now());
    });
    await heartbeat();
  };

  // ---- progress: lag and committed offsets as the broker sees them ------------------------
  /** Refreshes lag per owned partition; a partition whose committed offset moves (or has no lag) makes progress. */
  const checkProgress = async () => {
    const now = Date.now();
    const [ends, committed] = await Promise.all([admin.fetchTopicOffsets(topics.events), admin.fetchOffsets({ groupId, topics: [topics.events] })]);
    const at = new Map((committed[0]?.partitions ?? []).map((p) => [p.partition, Number(p.offset)]));
    for (const p of [...progress.keys()]) if (!assignment.has(p)) progress.delete(p);
    let behind = false;
    const reading: number[] = [];
    for (const o of ends) {
      if (!assignment.has(o.partition)) continue;
      const c = at.get(o.partition) ?? -1;
      const from = c >= 0 ? c : Number(o.low);
      const lag = Math.max(0, Number(o.high) - from);
      const prev = progress.get(o.partition);
      const moved = !prev || prev.committed !== c || lag === 0;
      progress.set(o.partition, { lag, committed: c, since: moved ? now : prev.since });
      const pos = Math.max(parts.get(o.partition)?.engine.next ?? 0, from);
      reading.push(o.partition, pos);
      if (Number(o.high) > pos) behind = true;
    }
    eventsWatch.observe(behind, reading.join(','), now);
  };

  /** Whether the read side has every aggregate in its topic, for its watchdog. */
  const checkView = async () => {
    const ends = await admin.fetchTopicOffsets(topics.aggregates);
    const reading = ends.map((o) => `${o.partition}:${viewPos.get(o.partition) ?? o.low}`);
    const behind = ends.some((o) => Number(o.high) > (viewPos.get(o.partition) ?? Number(o.low)));
    viewWatch.observe(behind, reading.join(','));
  };

  // Its own timer, not the housekeeping pass: a pass stuck on a publish must not stop the watch.
  let watching = false;
  const watch = async () => {
    if (watching || closing || !ready) return;
    watching = true;
    try {
      await checkProgress().catch((err: unknown) => log.debug({ err: describeError(err) }, 'lag check failed'));
      await checkView().catch((err: unknown) => log.debug({ err: describeError(err) }, 'view lag check failed'));
    } finally {
      watching = false;
    }
  };

  /** Owned partitions with lag whose committed offset has not moved for stallMs. */
  const stalled = () => {
    const now = Date.now();
    return [...progress.entries()]
      .filter(([, p]) => p.lag > 0 && now - p.since > stallMs)
      .map(([partition, p]) => ({ partition, lag: p.lag, stalledMs: now - p.since }))
      .sort((a, b) => a.partition - b.partition);
  };

  // ---- handlers: housekeeping ------------------------------------------------------------
  let ticking = false;
  const tick = async (force = false) => {
    if (ticking && !force) return;
    ticking = true;
    try {
      const now = Date.now();
      const elapsed = (now - lastRateAt) / 1000;
      if (elapsed >= 2) {
        m.rate.set(readSinceRate / elapsed);
        readSinceRate = 0;
        lastRateAt = now;
      }
      await Promise.all([...parts.entries()].map(([p, st]) => withLock(st, () => publishAndCommit(p, st, Date.now(), force))));
      await flushIngestDlq();
      if (misses) {
        await misses.tick(Date.now(), force);
        if (missDlq.pendingDlq.length) await withLock(missDlq, () => publishDlq('misses', missDlq, true));
      }
    } finally {
      ticking = false;
    }
  };
  const stopKafka = async () => {
    await misses?.stop();
    await consumer.disconnect().catch(() => undefined);
    await viewConsumer.disconnect().catch(() => undefined);
    await producer.disconnect().catch(() => undefined);
    await admin.disconnect().catch(() => undefined);
  };

  // ---- ingest (telemetry/ingest.ts): beacons through a spilling producer, refusals to the DLQ ----
  // An outage holds the ingest's DLQ records (up to DLQ_BACKLOG), as it holds a partition's.
  const ingestDlq: DlqQueue = { pendingDlq: [], dlqFailures: 0, lock: Promise.resolve() };
  const flushIngestDlq = () => (ingestDlq.pendingDlq.length ? withLock(ingestDlq, () => publishDlq('ingest', ingestDlq, false)) : Promise.resolve(true));
  let ingestProducer: KafkaEventProducer | undefined;
  let ingest: Ingest | undefined;
  let spillFile: string | undefined;
  if (opts.ingest !== false) {
    const wanted = resolve(opts.spillDir ?? join('.ocdn', 'spill'), `aggregator-ingest-${groupId.replace(/[^\w.-]/g, '_')}`);
    let n = 0;
    while (spillFilesInUse.has(`${wanted}${n ? `-${n}` : ''}.jsonl`)) n++;
    spillFile = `${wanted}${n ? `-${n}` : ''}.jsonl`;
    spillFilesInUse.add(spillFile);
    ingestProducer = createProducer({
      brokers,
      topic: topics.events,
      clientId: `ocdn-aggregator-ingest-${instance}`,
      spillFile,
      maxSpillBytes: opts.spillMaxBytes,
      log: log.child({ part: 'ingest' }),
      registry,
    });
    ingest = createIngest({
      producer: ingestProducer,
      dlq: (refused, where) => {
        for (const d of dlqMessages(refused, where, null, Date.now(), 'batch')) queueDlq(ingestDlq, d);
      },
      timeBounds,
      rate: opts.ingestRate,
      registry,
      log,
    });
  }
  const stopIngest = async () => {
    await ingestProducer?.close().catch((err: unknown) => log.warn({ err: describeError(err) }, 'ingest producer close failed'));
    if (spillFile) spillFilesInUse.delete(spillFile);
  };
  // ---- miss classification (telemetry/miss-stream.ts): decisions ⋈ accesses into the same windows ----
  const missDlq: DlqQueue = { pendingDlq: [], dlqFailures: 0, lock: Promise.resolve() };
  const misses: MissStream | undefined =
    opts.misses === false
      ? undefined
      : createMissStream({
          kafka,
          topics,
          groupId: `${groupId}-misses`,
          windows: wopts,
          timeBounds,
          publish: async (records) => {
            await producer.send({ topic: topics.aggregates, acks: -1, messages: records.map((r) => ({ key: partialKey(r), value: JSON.stringify(r) })) });
            m.records.inc({ final: 'true' }, records.filter((r) => r.final).length);
            m.records.inc({ final: 'false' }, records.filter((r) => !r.final).length);
          },
          dlq: (refused, where, key) => {
            for (const d of dlqMessages(refused, where, key, Date.now())) queueDlq(missDlq, d);
          },
          registry,
          log: log.child({ part: 'misses' }),
        });
  const streams = new QoeStreams({ compute: (params) => qoeResponse(view, wopts, params), ...opts.stream, registry, log });

  // ---- HTTP (telemetry/aggregator-http.ts) -----------------------------------------------
  const handleHttp = aggregatorRoutes({
    view,
    windows: wopts,
    registry,
    ingest,
    streams,
    log,
    health: () => {
      const stuck = stalled();
      const crashed = eventsWatch.crashed() ?? viewWatch.crashed();
      const reason = !ready
        ? 'starting'
        : closing
          ? 'stopping'
          : crashed
            ? `consumer crashed: ${crashed}`
            : stuck.length
              ? stuck.map((s) => `partition ${s.partition} made no progress for ${Math.round(s.stalledMs / 1000)} s with ${s.lag} messages of lag`).join('; ')
              : null;
      return {
        ok: reason === null,
        reason,
        ready,
        crashed: crashed ?? null,
        stalled: stuck,
        consumers: { events: eventsWatch.state(), view: viewWatch.state() },
        groupId,
        partitions: [...parts.keys()].sort((a, b) => a - b),
        viewRecords: view.size,
        streams: streams.size,
        misses: misses ? { ...misses.state(), dlqPending: missDlq.pendingDlq.length } : null,
        ingest: ingestProducer ? { ...ingestProducer.backlog(), clients: ingest!.clients(), dlqPending: ingestDlq.pendingDlq.length } : null,
      };
    },
  });

  // ---- lifecycle -------------------------------------------------------------------------
  if (opts.createTopics !== false) await ensureTopics(brokers, { topics, log });
  consumer.on(consumer.events.GROUP_JOIN, (e) => {
    const mine = new Set(e.payload.memberAssignment[topics.events] ?? []);
    assignment.clear();
    for (const p of mine) assignment.add(p);
    for (const p of [...parts.keys()]) {
      if (!mine.has(p)) {
        parts.delete(p);
        progress.delete(p);
        m.lag.remove({ partition: String(p) });
        log.info({ partition: p }, 'partition revoked');
      }
    }
    m.assigned.set(mine.size);
    log.info({ partitions: [...mine].sort((a, b) => a - b), groupId }, 'joined consumer group');
  });
  consumer.on(consumer.events.FETCH, () => {
    lastFetchAt = Date.now();
  });
  const runEvents = () => consumer.run({ autoCommit: false, eachBatchAutoResolve: false, eachBatch });
  const runView = () => viewConsumer.run({ autoCommit: false, eachBatchAutoResolve: true, eachBatch: onViewBatch });
  const watchdog = (name: string, c: Consumer, run: () => Promise<void>) =>
    watchConsumer({ name, consumer: c, run, recoverMs, log, isClosing: () => closing, onRestart: () => m.consumerRestarts.inc({ consumer: name }) });
  const eventsWatch = watchdog('events', consumer, runEvents);
  const viewWatch = watchdog('view', viewConsumer, runView);

  const timer = setInterval(() => {
    if (!closing && ready) void tick().catch((err: unknown) => log.warn({ err: describeError(err) }, 'housekeeping failed'));
  }, tickMs);
  timer.unref();
  const watchTimer = setInterval(() => void watch(), Math.min(2_000, stallMs / 4, recoverMs / 4));
  watchTimer.unref();

  const cors = corsPolicy({ origins: opts.corsOrigins ?? '*', methods: ['GET', 'HEAD', 'POST'] });
  const server: Server = createHardenedServer(handleHttp, { log, registry, cors }).server;
  const host = opts.host ?? '127.0.0.1';
  let port: number;
  try {
    port = await listen(server, opts.port ?? 8500, host);
  } catch (err) {
    clearInterval(timer);
    clearInterval(watchTimer);
    await stopIngest();
    throw err;
  }

  try {
    await admin.connect();
    await producer.connect();
    await viewConsumer.connect();
    await viewConsumer.subscribe({ topics: [topics.aggregates], fromBeginning: true });
    await runView();
    await viewCaughtUp();
    await consumer.connect();
    await consumer.subscribe({ topics: [topics.events], fromBeginning: opts.fromBeginning ?? true });
    await runEvents();
    await misses?.start();
  } catch (err) {
    clearInterval(timer);
    clearInterval(watchTimer);
    streams.close();
    await closeServer(server, 100);
    await stopIngest();
    await stopKafka();
    throw new OcdnError(ErrorCodes.BROKER_UNAVAILABLE, `aggregator could not start against Kafka at ${brokers.join(',')}: ${describeError(err)}`, {
      cause: err,
    });
  }
  ready = true;
  const url = `http://${host}:${port}`;
  log.info({ url, brokers, groupId, topics, window: wopts }, 'aggregator running');

  let closed: Promise<void> | undefined;
  return {
    url,
    port,
    view,
    registry,
    assigned: () => [...assignment].sort((a, b) => a - b),
    stats: () =>
      Object.fromEntries(
        [...parts.entries()].map(([p, st]) => [
          p,
          { ...st.engine.stats, watermark: st.engine.watermark, openWindows: st.engine.openWindows, next: st.engine.next },
        ]),
      ),
    publishNow: () => tick(true),
    close() {
      closed ??= (async () => {
        closing = true;
        clearInterval(timer);
        clearInterval(watchTimer);
        // Open streams would hold closeServer for its whole grace: they end first.
        streams.close();
        // Stop reading first, then publish what was read so the next owner starts from the
        // committed offsets with nothing half-emitted.
        await consumer.stop().catch(() => undefined);
        await Promise.all([...parts.entries()].map(([p, st]) => withLock(st, () => publishAndCommit(p, st, Date.now(), true)))).catch(() => undefined);
        await misses?.tick(Date.now(), true).catch(() => undefined);
        await closeServer(server, 1_000);
        // After the server: no beacon arrives any more; what was acknowledged is in Kafka or the spill file.
        await stopIngest();
        await flushIngestDlq().catch(() => undefined);
        await stopKafka();
        log.info('aggregator stopped');
      })();
      return closed;
    },
  };
}

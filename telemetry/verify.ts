/**
 * Offline recount (`ocdn qoe verify`): reads the raw events topic from the beginning up to the
 * current end, runs the same window engine over every partition in offset order (no idle
 * shortcut: only event times close windows), and compares the result with what a live
 * aggregator serves. Counters must match exactly; quantiles come from identical sketches.
 */
import { randomBytes } from 'node:crypto';
import { ErrorCodes, OcdnError } from '../common/errors.ts';
import { createLogger, type Logger } from '../common/log.ts';
import { waitFor } from '../common/retry.ts';
import { DIMENSIONS, type Dimension, type QoeMetrics } from './merge.ts';
import { createKafka } from './kafka.ts';
import { parseBrokers, topicNames, type TopicNames } from './topics.ts';
import { defaultEventTimeBounds, defaultMessageLimits, eventTimeProblem, parseMessage, type EventTimeBounds, type MessageLimits } from './validate.ts';
import { AggregateView, type QoeResult } from './view.ts';
import { PartitionWindows, type WindowOptions } from './windows.ts';

export interface RecountOptions {
  brokers?: string | string[];
  topics?: TopicNames;
  windowMs: number;
  graceMs: number;
  timeoutMs?: number;
  /** The aggregator's message limits and event-time bounds: events it refused are refused here too. */
  messageLimits?: Partial<MessageLimits>;
  eventTime?: Partial<EventTimeBounds>;
  log?: Logger;
}

export interface Recount {
  view: AggregateView;
  events: number;
  invalid: number;
  partitions: number;
}

/** Recomputes every window from the raw topic (up to its end when called). */
export async function recount(opts: RecountOptions): Promise<Recount> {
  const log = opts.log ?? createLogger('verify');
  const brokers = parseBrokers(opts.brokers);
  const topics = opts.topics ?? topicNames();
  const kafka = createKafka({ brokers, clientId: 'ocdn-verify', log });
  const admin = kafka.admin();
  await admin.connect();
  const ends = await admin.fetchTopicOffsets(topics.events).finally(() => admin.disconnect());
  const target = new Map(ends.map((o) => [o.partition, Number(o.high)]));
  const wopts: WindowOptions = { windowMs: opts.windowMs, graceMs: opts.graceMs, idleMs: 0, lateRetentionMs: 7 * 24 * 3600_000, provisionalMs: 0 };
  const engines = new Map<number, PartitionWindows>(ends.map((o) => [o.partition, new PartitionWindows(o.partition, wopts)]));
  const pos = new Map<number, number>(ends.map((o) => [o.partition, Number(o.low)]));
  let events = 0;
  let invalid = 0;
  const limits: MessageLimits = { ...defaultMessageLimits, ...opts.messageLimits };
  const bounds: EventTimeBounds = { ...defaultEventTimeBounds, ...opts.eventTime };
  const consumer = kafka.consumer({ groupId: `ocdn-verify-${randomBytes(6).toString('hex')}`, maxWaitTimeInMs: 200, maxBytesPerPartition: 8 << 20 });
  await consumer.connect();
  try {
    await consumer.subscribe({ topics: [topics.events], fromBeginning: true });
    await consumer.run({
      autoCommit: false,
      eachBatch: async ({ batch }) => {
        const eng = engines.get(batch.partition)!;
        const end = target.get(batch.partition) ?? 0;
        for (const msg of batch.messages) {
          const offset = Number(msg.offset);
          if (offset >= end) break;
          // Arrival is the message's broker timestamp, as on the live side, so both refuse the same events.
          const arrival = Number(msg.timestamp);
          for (const v of parseMessage(msg.value, limits)) {
            if (v.ok && !(Number.isFinite(arrival) && arrival > 0 && eventTimeProblem(v.event.ts, arrival, bounds))) {
              eng.add(v.event, offset, 0);
              events++;
            } else invalid++;
          }
          eng.skip(offset);
          pos.set(batch.partition, offset + 1);
        }
      },
    });
    const behind = () => [...target].filter(([p, high]) => (pos.get(p) ?? 0) < high).map((b) => b[0]);
    await waitFor(() => behind().length === 0, {
      timeoutMs: opts.timeoutMs ?? 120_000,
      timeoutError: () => new OcdnError(ErrorCodes.BROKER_UNAVAILABLE, `recount did not reach the end of partitions ${behind().join(', ')} in time`),
    });
  } finally {
    await consumer.disconnect().catch(() => undefined);
  }
  const view = new AggregateView({ retentionMs: Number.MAX_SAFE_INTEGER });
  for (const eng of engines.values()) {
    // Windows still open count as they stand, marked provisional, like the live side shows them.
    const { records } = eng.collect(Date.now(), true);
    for (const r of records) view.upsert(r);
  }
  log.info({ events, invalid, partitions: engines.size }, 'recount done');
  return { view, events, invalid, partitions: engines.size };
}

export interface Mismatch {
  dim: Dimension;
  window: number;
  value: string;
  field: string;
  live: number | null | undefined;
  recount: number | null | undefined;
}

const COMPARED: (keyof QoeMetrics)[] = [
  'events',
  'sessions',
  'sessionEnds',
  'startups',
  'startFailures',
  'exitsBeforeStart',
  'stalls',
  'switches',
  'errors',
  'fatalErrors',
  'failovers',
  'segments',
  'segmentBytes',
  'duplicates',
  'late',
  'playS',
  'stallS',
  'vstP50Ms',
  'vstP95Ms',
  'vstP99Ms',
];

function close(a: number | null | undefined, b: number | null | undefined): boolean {
  if (a === b) return true;
  if (typeof a !== 'number' || typeof b !== 'number') return false;
  // Float sums (played seconds) may differ in the last bits with merge order.
  return Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(a), Math.abs(b));
}

/** Compares a live answer with the recount's for the same query. */
export function compareResults(
  dim: Dimension,
  live: QoeResult,
  rec: QoeResult,
  opts: { finalOnly?: boolean } = {},
): { compared: number; mismatches: Mismatch[] } {
  const mismatches: Mismatch[] = [];
  let compared = 0;
  const recWindows = new Map(rec.windows.map((w) => [w.start, w]));
  const liveWindows = new Map(live.windows.map((w) => [w.start, w]));
  const starts = new Set([...recWindows.keys(), ...liveWindows.keys()]);
  for (const start of [...starts].sort((a, b) => a - b)) {
    const lw = liveWindows.get(start);
    const rw = recWindows.get(start);
    if (opts.finalOnly && lw && !lw.final) continue;
    const values = new Set([...(lw?.rows ?? []).map((r) => r.value), ...(rw?.rows ?? []).map((r) => r.value)]);
    for (const value of values) {
      const l = lw?.rows.find((r) => r.value === value);
      const r = rw?.rows.find((x) => x.value === value);
      compared++;
      for (const f of COMPARED) {
        const lv = l ? l[f] : undefined;
        const rv = r ? r[f] : undefined;
        if (!close(lv as number | null | undefined, rv as number | null | undefined))
          mismatches.push({ dim, window: start, value, field: f, live: lv as number, recount: rv as number });
      }
    }
  }
  return { compared, mismatches };
}

export interface VerifyReport {
  range: { from: number | null; to: number | null };
  events: number;
  invalid: number;
  compared: number;
  mismatches: Mismatch[];
}

/** Recounts and compares every dimension with the aggregator at `url`. */
export async function verify(opts: RecountOptions & { url: string; from?: number; to?: number; lastMs?: number; finalOnly?: boolean }): Promise<VerifyReport> {
  const rc = await recount(opts);
  const report: VerifyReport = { range: { from: null, to: null }, events: rc.events, invalid: rc.invalid, compared: 0, mismatches: [] };
  for (const dim of DIMENSIONS) {
    const params = new URLSearchParams({ by: dim, window: `${opts.windowMs}ms` });
    if (opts.from !== undefined) params.set('from', String(opts.from));
    if (opts.to !== undefined) params.set('to', String(opts.to));
    if (opts.lastMs !== undefined) params.set('last', `${opts.lastMs}ms`);
    const res = await fetch(`${opts.url}/v1/qoe?${params}`, { signal: AbortSignal.timeout(10_000) });
    if (!res.ok) throw new OcdnError(ErrorCodes.BAD_REQUEST, `aggregator answered ${res.status}: ${(await res.text()).trim()}`);
    const live = (await res.json()) as QoeResult;
    const q = { by: dim, windowMs: opts.windowMs, ...(live.from !== null ? { from: live.from } : {}), ...(live.to !== null ? { to: live.to } : {}) };
    const rec = rc.view.query(q);
    report.range = { from: live.from, to: live.to };
    const c = compareResults(dim, live, rec, { finalOnly: opts.finalOnly });
    report.compared += c.compared;
    report.mismatches.push(...c.mismatches);
  }
  return report;
}

/**
 * The aggregator's miss classification (issue 15): a consumer over the steering decisions and
 * edge access topics feeds the event-time join (miss-join.ts), and the bytes of each class go
 * into the same windowed partial aggregates as QoE (per window, for the dimensions all, edge,
 * title and region), upserted to the aggregates topic and merged by the read side (view.ts), so
 * /v1/qoe carries localHitBytes … otherMissBytes next to the QoE figures.
 *
 * Region is the client's site from the decision an access was joined to (as a QoE event's
 * region is the player's), so an unmatched or late access counts under edge and title only.
 * Records carry partition MISS_PARTITION_BASE + the access record's partition, so they never
 * collide with the QoE partials of the events topic.
 */
import type { Consumer, EachBatchPayload, Kafka, Message } from 'kafkajs';
import { Counter, Gauge, type Registry } from 'prom-client';
import { type EdgeAccess, SteeringDecisionSchema } from '../common/contracts.ts';
import { describeError } from '../common/errors.ts';
import { bodyValidator } from '../common/http.ts';
import type { Logger } from '../common/log.ts';
import { accessesOfPack } from './access-pack.ts';
import type { RefusedEvent } from './ingest.ts';
import type { TopicNames } from './topics.ts';
import { aggToJson, type Agg, type Dimension, emptyAgg } from './merge.ts';
import { type JoinedAccess, MissJoin, type MissJoinOptions } from './miss-join.ts';
import { type EventTimeBounds, eventTimeProblem } from './validate.ts';
import { partialKey, type PartialRecord, type WindowOptions } from './windows.ts';

export const MISS_PARTITION_BASE = 10_000;

interface Cell {
  dim: Dimension;
  value: string;
  agg: Agg;
  dirty: boolean;
}

interface MissWindow {
  start: number;
  partition: number;
  cells: Map<string, Cell>;
  finalSent: boolean;
}

/** Windowed bytes per class, per source partition; emits PartialRecords like PartitionWindows. */
export class MissWindows {
  private readonly windows = new Map<string, MissWindow>();
  private seq = 0;
  private lastProvisionalAt = 0;
  /** Windows starting before this were forgotten: a record for one made again would overwrite its final record. */
  private horizon = Number.NEGATIVE_INFINITY;

  constructor(private readonly o: Pick<WindowOptions, 'windowMs' | 'graceMs' | 'lateRetentionMs' | 'provisionalMs'>) {}

  private cell(partition: number, ts: number, dim: Dimension, value: string): Agg | undefined {
    const start = Math.floor(ts / this.o.windowMs) * this.o.windowMs;
    const wkey = `${partition}|${start}`;
    let w = this.windows.get(wkey);
    if (!w && start < this.horizon) return undefined;
    if (!w) this.windows.set(wkey, (w = { start, partition, cells: new Map(), finalSent: false }));
    const ckey = `${dim}\u0000${value}`;
    let c = w.cells.get(ckey);
    if (!c) w.cells.set(ckey, (c = { dim, value, agg: emptyAgg(), dirty: false }));
    c.dirty = true;
    return c.agg;
  }

  private cells(partition: number, a: EdgeAccess, site: string | undefined): Agg[] {
    const out = [this.cell(partition, a.ts, 'all', '*'), this.cell(partition, a.ts, 'edge', a.edge), this.cell(partition, a.ts, 'title', a.title)];
    if (site !== undefined) out.push(this.cell(partition, a.ts, 'region', site));
    return out.filter((x) => x !== undefined);
  }

  private static stamp(agg: Agg, ts: number): void {
    if (ts < agg.minTs) agg.minTs = ts;
    if (ts > agg.maxTs) agg.maxTs = ts;
  }

  addJoined(partition: number, j: JoinedAccess): void {
    const key = `${j.cls}Bytes` as const;
    for (const agg of this.cells(partition, j.access, j.site)) {
      agg[key] += j.access.bytes;
      MissWindows.stamp(agg, j.access.ts);
    }
  }

  addUnmatched(partition: number, a: EdgeAccess): void {
    for (const agg of this.cells(partition, a, undefined)) {
      agg.unmatchedAccesses++;
      agg.unmatchedAccessBytes += a.bytes;
      MissWindows.stamp(agg, a.ts);
    }
  }

  addLate(partition: number, a: EdgeAccess): void {
    for (const agg of this.cells(partition, a, undefined)) agg.lateAccesses++;
  }

  get size(): number {
    return this.windows.size;
  }

  /**
   * Records to upsert: final ones for windows the join's watermark has passed by the grace
   * (every access of them classified), provisional ones for open windows when due (or `force`).
   */
  collect(closedThrough: number, now: number, force = false): PartialRecord[] {
    const out: PartialRecord[] = [];
    const provisional = force || (this.o.provisionalMs > 0 && now - this.lastProvisionalAt >= this.o.provisionalMs);
    if (provisional) this.lastProvisionalAt = now;
    for (const [key, w] of this.windows) {
      const final = w.start + this.o.windowMs + this.o.graceMs <= closedThrough;
      const closing = final && !w.finalSent;
      if (!closing && !final && !provisional) continue;
      for (const c of w.cells.values()) {
        if (!closing && !c.dirty) continue;
        c.dirty = false;
        out.push({
          v: 1,
          windowMs: this.o.windowMs,
          start: w.start,
          dim: c.dim,
          value: c.value,
          partition: w.partition,
          final,
          maxOffset: ++this.seq,
          wm: closedThrough,
          emittedAt: now,
          agg: aggToJson(c.agg),
        });
      }
      if (final) w.finalSent = true;
      if (final && w.start < closedThrough - this.o.lateRetentionMs) {
        this.windows.delete(key);
        this.horizon = Math.max(this.horizon, w.start + this.o.windowMs);
      }
    }
    return out;
  }
}

export interface MissStreamOptions {
  kafka: Kafka;
  topics: TopicNames;
  groupId: string;
  windows: WindowOptions;
  join?: Partial<Omit<MissJoinOptions, 'onLate' | 'onUnmatched'>>;
  timeBounds: EventTimeBounds;
  /** Upserts records to the aggregates topic; throws when the broker did not take them (retried). */
  publish: (records: PartialRecord[]) => Promise<void>;
  /** Bad records, with their reasons, to the DLQ. */
  dlq: (refused: RefusedEvent[], where: Record<string, unknown>, key: Buffer | string | null) => void;
  registry: Registry;
  log: Logger;
}

const checkDecision = bodyValidator(SteeringDecisionSchema, 'steering decision');

export interface MissStream {
  readonly consumer: Consumer;
  start(): Promise<void>;
  /** Moves the idle watermark, classifies what is due and publishes (housekeeping pass). */
  tick(now: number, force?: boolean): Promise<void>;
  state(): { watermark: number; waiting: number; windows: number; late: number; unmatched: number; unmatchedBytes: number; pendingRecords: number };
  stop(): Promise<void>;
}

export function createMissStream(o: MissStreamOptions): MissStream {
  const registers = [o.registry];
  const records = new Counter({
    name: 'ocdn_telemetry_miss_records_total',
    help: 'Decision and access records read by the miss join, by topic and result (decision, joined, unmatched, late, invalid)',
    labelNames: ['topic', 'result'],
    registers,
  });
  const classBytes = new Counter({
    name: 'ocdn_telemetry_miss_bytes_total',
    help: 'Bytes of edge access records by class (localHit, contentMiss, healthMiss, otherMiss, unmatched)',
    labelNames: ['class'],
    registers,
  });
  /** Source partition of each waiting access, for the records its bytes go into. */
  const partitionOf = new WeakMap<EdgeAccess, number>();
  const windows = new MissWindows(o.windows);
  // The join's grace covers the windows' grace and the join wait, so no on-time access lands in a window already final.
  const joinWaitMs = o.join?.joinWaitMs ?? 5_000;
  const join = new MissJoin({
    ...o.join,
    joinWaitMs,
    graceMs: o.join?.graceMs ?? joinWaitMs + o.windows.graceMs,
    onLate: (a) => {
      records.inc({ topic: 'access', result: 'late' });
      windows.addLate(partitionOf.get(a) ?? MISS_PARTITION_BASE, a);
    },
    onUnmatched: (a) => {
      records.inc({ topic: 'access', result: 'unmatched' });
      classBytes.inc({ class: 'unmatched' }, a.bytes);
      windows.addUnmatched(partitionOf.get(a) ?? MISS_PARTITION_BASE, a);
    },
  });
  new Gauge({
    name: 'ocdn_telemetry_miss_waiting_accesses',
    help: 'Access records waiting (event time) for their session decision',
    registers,
    collect() {
      this.set(join.waitingCount);
    },
  });
  /** Records the broker has not taken yet, by key: a newer one of a key replaces the older. */
  let pending = new Map<string, PartialRecord>();
  let lastRecordAt = 0;
  const consumer = o.kafka.consumer({ groupId: o.groupId, maxWaitTimeInMs: 200, allowAutoTopicCreation: false, sessionTimeout: 30_000 });

  const drain = (flush = false) => {
    for (const j of join.drain(flush)) {
      records.inc({ topic: 'access', result: 'joined' });
      classBytes.inc({ class: j.cls }, j.access.bytes);
      windows.addJoined(partitionOf.get(j.access) ?? MISS_PARTITION_BASE, j);
    }
  };

  const eachBatch = async ({ batch, heartbeat }: EachBatchPayload) => {
    const isDecision = batch.topic === o.topics.decisions;
    const topic = isDecision ? 'decisions' : 'access';
    let ok = 0;
    let invalid = 0;
    for (const msg of batch.messages) {
      const refused = readMessage(msg, isDecision, batch.partition);
      ok += refused.ok;
      if (refused.bad.length) {
        invalid += refused.bad.length;
        o.dlq(refused.bad, { topic: batch.topic, partition: batch.partition, offset: msg.offset }, msg.key);
      }
    }
    if (ok) records.inc({ topic, result: isDecision ? 'decision' : 'read' }, ok);
    if (invalid) records.inc({ topic, result: 'invalid' }, invalid);
    lastRecordAt = Date.now();
    drain();
    await heartbeat();
  };

  const readMessage = (msg: Message & { timestamp: string }, isDecision: boolean, partition: number): { ok: number; bad: RefusedEvent[] } => {
    const bad: RefusedEvent[] = [];
    let ok = 0;
    const text = msg.value === null || msg.value === undefined ? '' : msg.value.toString();
    const arrival = Number(msg.timestamp);
    const timeProblem = (ts: number) => (Number.isFinite(arrival) && arrival > 0 ? eventTimeProblem(ts, arrival, o.timeBounds) : undefined);
    for (const line of text.split('\n')) {
      if (line === '') {
        bad.push({ reason: 'empty record', raw: '' });
        continue;
      }
      let value: unknown;
      try {
        value = JSON.parse(line) as unknown;
      } catch (err) {
        bad.push({ reason: describeError(err).slice(0, 500), raw: line });
        continue;
      }
      if (isDecision) {
        try {
          const rec = checkDecision(value);
          const problem = timeProblem(rec.ts);
          if (problem !== undefined) bad.push({ reason: problem, raw: line });
          else {
            join.addDecision(rec);
            ok++;
          }
        } catch (err) {
          bad.push({ reason: describeError(err).slice(0, 500), raw: line });
        }
        continue;
      }
      const pack = accessesOfPack(value, line);
      bad.push(...pack.bad);
      for (const rec of pack.accesses) {
        const problem = timeProblem(rec.ts);
        if (problem !== undefined) {
          bad.push({ reason: problem, raw: JSON.stringify(rec) });
          continue;
        }
        partitionOf.set(rec, MISS_PARTITION_BASE + partition);
        join.addAccess(rec);
        ok++;
      }
    }
    return { ok, bad };
  };

  return {
    consumer,
    async start() {
      await consumer.connect();
      await consumer.subscribe({ topics: [o.topics.decisions, o.topics.access], fromBeginning: true });
      await consumer.run({ eachBatch });
    },
    async tick(now, force = false) {
      // Topics that go quiet must not hold their last accesses back: the watermark follows the clock.
      const idleMs = o.windows.idleMs;
      if (idleMs > 0 && lastRecordAt > 0 && now - lastRecordAt > idleMs && join.watermark > 0) {
        join.advanceTo(join.watermark + (now - lastRecordAt - idleMs));
        lastRecordAt = now - idleMs;
      }
      drain();
      for (const r of windows.collect(join.watermark - joinWaitMs, now, force)) pending.set(partialKey(r), r);
      if (pending.size === 0) return;
      const batch = pending;
      pending = new Map();
      try {
        await o.publish([...batch.values()]);
      } catch (err) {
        for (const [k, r] of pending) batch.set(k, r);
        pending = batch;
        o.log.warn({ err: describeError(err), records: pending.size }, 'miss aggregates not published; will retry');
      }
    },
    state() {
      return {
        watermark: join.watermark,
        waiting: join.waitingCount,
        windows: windows.size,
        ...join.counts,
        pendingRecords: pending.size,
      };
    },
    async stop() {
      await consumer.stop().catch(() => undefined);
      await consumer.disconnect().catch(() => undefined);
    },
  };
}

/**
 * Event-time tumbling windows for one topic partition, without any Kafka I/O, so the live
 * aggregator, the offline recount (`ocdn qoe verify`) and unit tests share one engine.
 *
 * Rules (DESIGN.md §2 Telemetry):
 * - an event belongs to window floor(ts / size) · size;
 * - the partition's watermark is the largest event time seen (advanced by wall-clock time
 *   while the partition is idle, so the last windows close when traffic stops);
 * - a window closes when watermark ≥ window end + grace; an event for a closed window is late:
 *   counted (metric + `late` field of its window), never merged into the metrics;
 * - an event id seen before in its window is a duplicate: counted, not merged;
 * - each record carries the highest source offset it includes, so after a restart the events
 *   replayed from the last committed offset that a final record already holds are skipped,
 *   which makes at-least-once consumption + upsert by key exact.
 */
import type { QoeEvent } from './events.ts';
import { aggFromJson, aggToJson, applyEvent, DIMENSIONS, dimensionValues, emptyAgg, type Agg, type AggJson, type Dimension } from './merge.ts';

export interface WindowOptions {
  windowMs: number;
  graceMs: number;
  /** After this much wall-clock time without events, the watermark follows the clock. 0 = never. */
  idleMs: number;
  /** Closed windows kept for late-event accounting; later ones only count in the metric. */
  lateRetentionMs: number;
  /** Open windows are published (final=false) at most this often; 0 = only when closed. */
  provisionalMs: number;
}

export const defaultWindowOptions: WindowOptions = {
  windowMs: 10_000,
  graceMs: 5_000,
  idleMs: 5_000,
  lateRetentionMs: 15 * 60_000,
  provisionalMs: 1_000,
};

/** One upsert to the aggregates topic: a partial aggregate of one partition. */
export interface PartialRecord {
  v: 1;
  windowMs: number;
  start: number;
  dim: Dimension;
  value: string;
  partition: number;
  final: boolean;
  /** Highest source offset whose event is included (or counted as late/duplicate). */
  maxOffset: number;
  /** Partition watermark when emitted. */
  wm: number;
  emittedAt: number;
  agg: AggJson;
}

export function partialKey(r: Pick<PartialRecord, 'windowMs' | 'start' | 'dim' | 'value' | 'partition'>): string {
  return `${r.windowMs}|${r.start}|${r.dim}|${encodeURIComponent(r.value)}|${r.partition}`;
}

export type AddResult = 'added' | 'duplicate' | 'late' | 'replayed';

/** 52 bits of a UUID as a number (smaller and faster in a Set than the string); other ids as is. */
function idKey(id: string): number | string {
  if (id.length === 36 && id.charCodeAt(8) === 45 /* - */) {
    const hi = Number.parseInt(id.slice(0, 8), 16);
    const lo = Number.parseInt(id.slice(31), 16);
    if (Number.isFinite(hi) && Number.isFinite(lo)) return hi * 1_048_576 + lo;
  }
  return id;
}

/** One (dimension, value) aggregate of a window, with its place in the dirty list. */
interface Cell {
  d: number;
  value: string;
  agg: Agg;
  dirty: boolean;
}

/** The cells of one window: a Map per dimension (no key concatenation on the hot path). */
class Cells {
  private readonly maps: Map<string, Cell>[] = DIMENSIONS.map(() => new Map());
  private dirty: Cell[] = [];

  get(d: number, value: string): Cell {
    const map = this.maps[d]!;
    let c = map.get(value);
    if (!c) {
      c = { d, value, agg: emptyAgg(), dirty: false };
      map.set(value, c);
    }
    if (!c.dirty) {
      c.dirty = true;
      this.dirty.push(c);
    }
    return c;
  }

  set(d: number, value: string, agg: Agg): void {
    this.maps[d]!.set(value, { d, value, agg, dirty: false });
  }

  all(): Cell[] {
    return this.maps.flatMap((m) => [...m.values()]);
  }

  takeDirty(): Cell[] {
    const out = this.dirty;
    this.dirty = [];
    for (const c of out) c.dirty = false;
    return out;
  }
}

interface OpenWindow {
  start: number;
  firstOffset: number;
  maxOffset: number;
  ids: Set<number | string>;
  cells: Cells;
}

interface ClosedWindow {
  start: number;
  maxOffset: number;
  /**
   * Highest offset already held by the records this window was restored from (-1 when it closed
   * in this run). Only those offsets are replays: in one run, several events of one (packed)
   * message share an offset and must all count.
   */
  restoredThrough: number;
  /** Decoded on the first late event (restored windows start with their records only). */
  cells: Cells | undefined;
  records: PartialRecord[] | undefined;
}

export class PartitionWindows {
  readonly partition: number;
  private readonly o: WindowOptions;
  private wm = Number.NEGATIVE_INFINITY;
  private lastEventAt = 0;
  private readonly open = new Map<number, OpenWindow>();
  private readonly closed = new Map<number, ClosedWindow>();
  private lastProvisionalAt = 0;
  /** Next offset to read; undefined until the first event. */
  private nextOffset: number | undefined;
  /** Event times of a sample of events added since the last emission, for freshness. */
  private freshSample: number[] = [];
  private sampleEvery = 1;
  private sampleCounter = 0;
  stats = { added: 0, duplicates: 0, late: 0, replayed: 0, closedWindows: 0 };

  constructor(partition: number, opts: WindowOptions, restore: PartialRecord[] = []) {
    this.partition = partition;
    this.o = opts;
    for (const r of restore) {
      if (r.partition !== partition || r.windowMs !== opts.windowMs || !r.final) continue;
      let c = this.closed.get(r.start);
      if (!c) {
        c = { start: r.start, maxOffset: -1, restoredThrough: -1, cells: undefined, records: [] };
        this.closed.set(r.start, c);
      }
      c.maxOffset = Math.max(c.maxOffset, r.maxOffset);
      c.restoredThrough = c.maxOffset;
      c.records!.push(r);
      if (r.wm > this.wm) this.wm = r.wm;
    }
  }

  get watermark(): number {
    return this.wm;
  }

  /** Offsets below this were already applied (re-deliveries after a rebalance are skipped). */
  get next(): number {
    return this.nextOffset ?? -1;
  }

  get openWindows(): number {
    return this.open.size;
  }

  /** Adds one valid event read at `offset`. */
  add(e: QoeEvent, offset: number, now: number): AddResult {
    this.nextOffset = offset + 1;
    this.lastEventAt = now;
    const size = this.o.windowMs;
    const start = Math.floor(e.ts / size) * size;
    const closed = this.closed.get(start);
    if (closed && offset <= closed.restoredThrough) {
      this.stats.replayed++;
      return 'replayed';
    }
    const win = this.open.get(start);
    if (start + size + this.o.graceMs <= this.wm) {
      this.countLate(e, start, offset, win, closed);
      return 'late';
    }
    if (e.ts > this.wm) this.wm = e.ts;
    let w = win;
    if (!w) {
      w = { start, firstOffset: offset, maxOffset: offset, ids: new Set(), cells: new Cells() };
      this.open.set(start, w);
    }
    w.maxOffset = offset;
    const key = idKey(e.id);
    const values = dimensionValues(e);
    if (w.ids.has(key)) {
      this.stats.duplicates++;
      for (let d = 0; d < values.length; d++) w.cells.get(d, values[d]!).agg.duplicates++;
      return 'duplicate';
    }
    w.ids.add(key);
    for (let d = 0; d < values.length; d++) applyEvent(w.cells.get(d, values[d]!).agg, e);
    this.stats.added++;
    if (++this.sampleCounter >= this.sampleEvery) {
      this.sampleCounter = 0;
      this.freshSample.push(e.ts);
      if (this.freshSample.length >= 512) {
        // Keep every other sample and halve the rate: a bounded, evenly spread sample.
        this.freshSample = this.freshSample.filter((_, i) => i % 2 === 0);
        this.sampleEvery *= 2;
      }
    }
    return 'added';
  }

  /** Records that an offset was consumed without an event (invalid → DLQ). */
  skip(offset: number): void {
    if (this.nextOffset === undefined || offset + 1 > this.nextOffset) this.nextOffset = offset + 1;
  }

  private countLate(e: QoeEvent, start: number, offset: number, win: OpenWindow | undefined, closed: ClosedWindow | undefined): void {
    this.stats.late++;
    const values = dimensionValues(e);
    if (win) {
      // Past its close time but not closed yet (the batch is still running).
      win.maxOffset = offset;
      for (let d = 0; d < values.length; d++) win.cells.get(d, values[d]!).agg.late++;
      return;
    }
    if (start < this.wm - this.o.lateRetentionMs) return; // too old to keep a record for: metric only
    let c = closed;
    if (!c) {
      c = { start, maxOffset: offset, restoredThrough: -1, cells: new Cells(), records: undefined };
      this.closed.set(start, c);
    }
    if (!c.cells) {
      c.cells = new Cells();
      for (const r of c.records ?? []) c.cells.set(DIMENSIONS.indexOf(r.dim), r.value, aggFromJson(r.agg));
      c.records = undefined;
    }
    c.maxOffset = Math.max(c.maxOffset, offset);
    for (let d = 0; d < values.length; d++) c.cells.get(d, values[d]!).agg.late++;
  }

  /** Moves the watermark with the clock when idle, and closes every window it has passed. */
  advance(now: number): void {
    if (this.o.idleMs > 0 && this.lastEventAt > 0 && Number.isFinite(this.wm)) {
      const idleFor = now - this.lastEventAt;
      if (idleFor > this.o.idleMs) {
        this.wm += idleFor - this.o.idleMs;
        this.lastEventAt = now - this.o.idleMs;
      }
    }
  }

  /**
   * Restarts the idle clock. The aggregator calls it while it cannot fetch (broker down): time
   * without events because nothing can be read is not idleness, and letting the watermark run
   * on would make every event produced during the outage late.
   */
  holdIdle(now: number): void {
    if (this.lastEventAt > 0) this.lastEventAt = Math.max(this.lastEventAt, now);
  }

  /**
   * Closes windows the watermark has passed and returns the records to upsert: final ones for
   * closed windows and late updates, provisional ones for open windows when due (or `force`).
   */
  collect(now: number, force = false): { records: PartialRecord[]; freshness: number[] } {
    const out: PartialRecord[] = [];
    const size = this.o.windowMs;
    for (const w of [...this.open.values()].sort((a, b) => a.start - b.start)) {
      if (w.start + size + this.o.graceMs > this.wm) continue;
      for (const cell of w.cells.all()) out.push(this.record(w.start, cell, true, w.maxOffset, now));
      w.cells.takeDirty();
      this.open.delete(w.start);
      this.closed.set(w.start, { start: w.start, maxOffset: w.maxOffset, restoredThrough: -1, cells: w.cells, records: undefined });
      this.stats.closedWindows++;
    }
    for (const c of this.closed.values()) {
      if (!c.cells) continue;
      for (const cell of c.cells.takeDirty()) out.push(this.record(c.start, cell, true, c.maxOffset, now));
    }
    if (force || (this.o.provisionalMs > 0 && now - this.lastProvisionalAt >= this.o.provisionalMs)) {
      this.lastProvisionalAt = now;
      for (const w of this.open.values()) {
        for (const cell of w.cells.takeDirty()) out.push(this.record(w.start, cell, false, w.maxOffset, now));
      }
    }
    for (const c of [...this.closed.values()]) if (c.start < this.wm - this.o.lateRetentionMs) this.closed.delete(c.start);
    let freshness: number[] = [];
    if (out.length > 0) {
      freshness = this.freshSample;
      this.freshSample = [];
      this.sampleEvery = 1;
    }
    return { records: out, freshness };
  }

  /**
   * The offset to commit: the first offset of the oldest open window (its events must be read
   * again after a restart), or the next unread offset when nothing is open.
   */
  commitOffset(): number | undefined {
    let min = this.nextOffset;
    for (const w of this.open.values()) if (min === undefined || w.firstOffset < min) min = w.firstOffset;
    return min;
  }

  private record(start: number, cell: Cell, final: boolean, maxOffset: number, now: number): PartialRecord {
    const a = cell.agg;
    return {
      v: 1,
      windowMs: this.o.windowMs,
      start,
      dim: DIMENSIONS[cell.d]!,
      value: cell.value,
      partition: this.partition,
      final,
      maxOffset,
      wm: this.wm,
      emittedAt: now,
      agg: aggToJson(a),
    };
  }
}

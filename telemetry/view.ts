/**
 * Read side: the latest partial record per key (as the compacted aggregates topic holds it),
 * merged across partitions at query time, and rolled up from the base window to coarser ones
 * (10 s → 1 min) by merging, which is exact because every field is a sum or a sketch.
 */
import { ErrorCodes, OcdnError } from '../common/errors.ts';
import { parseDuration } from '../common/units.ts';
import type { QoeResult, QoeRow } from '../common/contracts.ts';
import { aggFromJson, DIMENSIONS, emptyAgg, mergeInto, metricsOf, type Agg, type Dimension } from './merge.ts';
import { partialKey, type PartialRecord } from './windows.ts';

export interface QoeQuery {
  by: Dimension;
  /** Output window size, ms: the base window or a multiple of it (rollup). */
  windowMs: number;
  /** Range [from, to) on window start; `last` is relative to the newest window seen. */
  from?: number;
  to?: number;
  lastMs?: number;
  /** Only this dimension value. */
  value?: string;
  /** Only windows every partition has closed. */
  finalOnly?: boolean;
}

/** The /v1/qoe body's parts (common/contracts.ts: QoeResponseSchema). */
export type { QoeResult, QoeRow, QoeWindow } from '../common/contracts.ts';

export function isRecord(x: unknown): x is PartialRecord {
  const r = x as PartialRecord;
  return (
    typeof r === 'object' &&
    r !== null &&
    r.v === 1 &&
    typeof r.windowMs === 'number' &&
    typeof r.start === 'number' &&
    (DIMENSIONS as readonly string[]).includes(r.dim) &&
    typeof r.value === 'string' &&
    typeof r.partition === 'number' &&
    typeof r.final === 'boolean' &&
    typeof r.agg === 'object' &&
    r.agg !== null
  );
}

export class AggregateView {
  private readonly records = new Map<string, PartialRecord>();
  /** start → keys, for range scans and pruning. */
  private readonly byStart = new Map<number, Set<string>>();
  private newest = Number.NEGATIVE_INFINITY;
  readonly retentionMs: number;

  constructor(opts: { retentionMs?: number } = {}) {
    this.retentionMs = opts.retentionMs ?? 3 * 3600_000;
  }

  get size(): number {
    return this.records.size;
  }

  get newestStart(): number | undefined {
    return Number.isFinite(this.newest) ? this.newest : undefined;
  }

  upsert(r: PartialRecord): void {
    const key = partialKey(r);
    const prev = this.records.get(key);
    // A provisional record that arrives after the final one (reordered by a rebalance) must not win.
    if (prev?.final && !r.final && prev.maxOffset >= r.maxOffset) return;
    this.records.set(key, r);
    let set = this.byStart.get(r.start);
    if (!set) {
      set = new Set();
      this.byStart.set(r.start, set);
    }
    set.add(key);
    if (r.start > this.newest) {
      this.newest = r.start;
      this.prune();
    }
  }

  delete(key: string): void {
    const r = this.records.get(key);
    if (!r) return;
    this.records.delete(key);
    this.byStart.get(r.start)?.delete(key);
  }

  private prune(): void {
    const cutoff = this.newest - this.retentionMs;
    for (const [start, keys] of [...this.byStart].sort((x, y) => x[0] - y[0])) {
      if (start >= cutoff) continue;
      for (const k of keys) this.records.delete(k);
      this.byStart.delete(start);
    }
  }

  /** Final records of one partition (to restore an aggregator's closed windows). */
  finalRecordsOf(partition: number, windowMs: number): PartialRecord[] {
    const out: PartialRecord[] = [];
    for (const r of this.records.values()) if (r.partition === partition && r.windowMs === windowMs && r.final) out.push(r);
    return out;
  }

  query(q: QoeQuery, now = Date.now()): QoeResult {
    const base = this.baseWindow();
    const out: QoeResult = { by: q.by, windowMs: q.windowMs, from: null, to: null, generatedAt: now, partitions: [], windows: [], totals: [] };
    if (base === undefined) return out;
    if (q.windowMs % base !== 0) throw new OcdnError(ErrorCodes.BAD_REQUEST, `window ${q.windowMs} ms is not a multiple of the aggregation window ${base} ms`);
    let to = q.to ?? this.newest + base;
    let from = q.from ?? (q.lastMs !== undefined ? to - q.lastMs : Number.NEGATIVE_INFINITY);
    // Align to output windows so a rollup never shows half a minute as a whole one.
    from = Math.floor(from / q.windowMs) * q.windowMs;
    to = Math.ceil(to / q.windowMs) * q.windowMs;
    out.from = Number.isFinite(from) ? from : null;
    out.to = to;
    const windows = new Map<number, { final: boolean; aggs: Map<string, Agg> }>();
    const totals = new Map<string, Agg>();
    const partitions = new Set<number>();
    for (const [start, keys] of [...this.byStart].sort((x, y) => x[0] - y[0])) {
      if (start < from || start >= to) continue;
      const outStart = Math.floor(start / q.windowMs) * q.windowMs;
      // Partials merge in partition order: float sums (and sketch merges) are not associative, and
      // every instance must give the same answer whatever order its records arrived in.
      const matching: PartialRecord[] = [];
      for (const key of keys) {
        const r = this.records.get(key);
        if (!r || r.windowMs !== base || r.dim !== q.by) continue;
        if (q.value !== undefined && r.value !== q.value) continue;
        matching.push(r);
      }
      matching.sort((x, y) => x.partition - y.partition);
      for (const r of matching) {
        partitions.add(r.partition);
        let w = windows.get(outStart);
        if (!w) {
          w = { final: true, aggs: new Map() };
          windows.set(outStart, w);
        }
        if (!r.final) w.final = false;
        const a = aggFromJson(r.agg);
        const cur = w.aggs.get(r.value);
        if (cur) mergeInto(cur, a);
        else w.aggs.set(r.value, a);
      }
    }
    const rowsOf = (aggs: Map<string, Agg>): QoeRow[] =>
      [...aggs.entries()].map(([value, a]) => ({ value, ...metricsOf(a) })).sort((x, y) => y.events - x.events || x.value.localeCompare(y.value));
    for (const [start, w] of [...windows.entries()].sort((a, b) => a[0] - b[0])) {
      if (q.finalOnly && !w.final) continue;
      out.windows.push({ start, end: start + q.windowMs, final: w.final, rows: rowsOf(w.aggs) });
      for (const [value, a] of w.aggs) mergeInto(totals.get(value) ?? totals.set(value, emptyAgg()).get(value)!, a);
    }
    out.totals = rowsOf(totals);
    out.partitions = [...partitions].sort((a, b) => a - b);
    return out;
  }

  private baseWindow(): number | undefined {
    for (const r of this.records.values()) return r.windowMs;
    return undefined;
  }
}

/** Parses /v1/qoe query parameters; BAD_REQUEST naming each problem. */
export function parseQoeQuery(params: URLSearchParams, baseWindowMs: number): QoeQuery {
  const problems: string[] = [];
  const by = params.get('by') ?? 'all';
  if (!(DIMENSIONS as readonly string[]).includes(by)) problems.push(`by must be one of ${DIMENSIONS.join(', ')}`);
  const dur = (name: string, def?: number): number | undefined => {
    const v = params.get(name);
    if (v === null || v === '') return def;
    try {
      const ms = parseDuration(v);
      if (ms <= 0) throw new Error('must be positive');
      return ms;
    } catch {
      problems.push(`${name}: "${v}" is not a duration (e.g. 10s, 1m, 5m)`);
      return def;
    }
  };
  const windowMs = dur('window', baseWindowMs)!;
  if (windowMs % baseWindowMs !== 0)
    problems.push(`window must be a multiple of the aggregation window (${baseWindowMs / 1000}s), e.g. ${baseWindowMs / 1000}s or 1m`);
  const lastMs = dur('last');
  const num = (name: string): number | undefined => {
    const v = params.get(name);
    if (v === null || v === '') return undefined;
    const n = Number(v);
    if (!Number.isFinite(n)) problems.push(`${name}: "${v}" is not a time in ms since epoch`);
    return n;
  };
  const from = num('from');
  const to = num('to');
  if (problems.length) throw new OcdnError(ErrorCodes.BAD_REQUEST, problems.join('; '));
  const q: QoeQuery = { by: by as Dimension, windowMs };
  if (lastMs !== undefined) q.lastMs = lastMs;
  if (from !== undefined) q.from = from;
  if (to !== undefined) q.to = to;
  const value = params.get('value');
  if (value !== null) q.value = value;
  if (params.get('final') === 'true' || params.get('final') === '1') q.finalOnly = true;
  return q;
}

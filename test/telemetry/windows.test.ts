import { describe, expect, it } from 'vitest';
import { isOcdnError } from '../../common/errors.ts';
import type { QoeEvent } from '../../telemetry/events.ts';
import { aggFromJson, aggToJson, applyEvent, emptyAgg, mergeInto, metricsOf } from '../../telemetry/merge.ts';
import { AggregateView, parseQoeQuery } from '../../telemetry/view.ts';
import { PartitionWindows, type PartialRecord, type WindowOptions } from '../../telemetry/windows.ts';
import { dataset, EXPECTED, exactQuantiles, T0 } from './helpers.ts';

const opts: WindowOptions = { windowMs: 10_000, graceMs: 1_000, idleMs: 0, lateRetentionMs: 600_000, provisionalMs: 0 };

function runAll(events: QoeEvent[], partitions = 1, o = opts) {
  const engines = Array.from({ length: partitions }, (_, p) => new PartitionWindows(p, o));
  const offsets = engines.map(() => 0);
  for (const e of events) {
    // Same partitioning idea as Kafka: by session.
    const p = [...e.sessionId].reduce((h, c) => (h * 31 + c.charCodeAt(0)) >>> 0, 7) % partitions;
    engines[p]!.add(e, offsets[p]!++, 0);
  }
  const view = new AggregateView();
  for (const eng of engines) for (const r of eng.collect(0, true).records) view.upsert(r);
  return { engines, view };
}

describe('window engine', () => {
  it('gives the hand-computed totals for the synthetic set, on 1 or 6 partitions alike', () => {
    const d = dataset();
    // One partition keeps every session together, so the late events are late here too.
    const events = [...d.main, ...d.advance, ...d.late];
    for (const n of [1, 6]) {
      const { view } = runAll(events, n);
      const all = view.query({ by: 'all', windowMs: 10_000 }).totals[0]!;
      expect(all.events).toBe(EXPECTED.all.events);
      expect(all.duplicates).toBe(EXPECTED.all.duplicates);
      expect(all.sessions).toBe(EXPECTED.all.sessions);
      expect(all.playS).toBe(EXPECTED.all.playS);
      expect(all.rebufferRatio).toBeCloseTo(EXPECTED.all.rebufferRatio, 12);
      if (n === 1) expect(all.late).toBe(EXPECTED.all.late);
    }
  });

  it('counts a repeated event id once and a late event only as late', () => {
    const d = dataset();
    const eng = new PartitionWindows(0, opts);
    const first = d.main[0]!;
    expect(eng.add(first, 0, 0)).toBe('added');
    expect(eng.add({ ...first }, 1, 0)).toBe('duplicate');
    expect(eng.add({ ...first, id: 'other-id', ts: T0 + 25_000 }, 2, 0)).toBe('added');
    // Window [T0, T0+10s) closes once the watermark passes T0 + 11 s.
    expect(eng.add({ ...first, id: 'late-one', ts: T0 + 5_000 }, 3, 0)).toBe('late');
    const recs = eng.collect(0).records;
    const w0 = recs.find((r) => r.start === T0 && r.dim === 'all')!;
    expect(w0.final).toBe(true);
    expect(w0.agg.events).toBe(1);
    expect(w0.agg.duplicates).toBe(1);
    expect(w0.agg.late).toBe(1);
    expect(w0.maxOffset).toBe(3);
    // Two late events packed in one message share an offset: both count.
    expect(eng.add({ ...first, id: 'late-two', ts: T0 + 6_000 }, 4, 0)).toBe('late');
    expect(eng.add({ ...first, id: 'late-three', ts: T0 + 7_000 }, 4, 0)).toBe('late');
    expect(eng.collect(0).records.find((r) => r.start === T0 && r.dim === 'all')!.agg.late).toBe(3);
  });

  it('commits only up to the first offset of a window still open', () => {
    const d = dataset();
    const eng = new PartitionWindows(0, opts);
    const e = d.main[0]!;
    eng.add({ ...e, id: 'a', ts: T0 + 1_000 }, 10, 0);
    eng.add({ ...e, id: 'b', ts: T0 + 10_200 }, 11, 0);
    expect(eng.commitOffset()).toBe(10); // both windows open
    eng.add({ ...e, id: 'c', ts: T0 + 10_500 }, 12, 0);
    eng.collect(0);
    expect(eng.commitOffset()).toBe(10); // watermark T0 + 10.5 s: window 0 waits for its grace
    eng.add({ ...e, id: 'd', ts: T0 + 20_500 }, 13, 0); // closes window 0 (end + grace = T0 + 11 s), not window 1
    eng.collect(0);
    expect(eng.commitOffset()).toBe(11); // window 1 still open: its first offset
    eng.add({ ...e, id: 'e', ts: T0 + 40_000 }, 14, 0);
    eng.collect(0);
    expect(eng.commitOffset()).toBe(14);
  });

  it('after a restart from the committed offset, skips what final records already hold', () => {
    const d = dataset();
    const e = d.main[0]!;
    const ev = (id: string, s: number) => ({ ...e, id, ts: T0 + s * 1_000 });
    const stream = [ev('a', 1), ev('b', 10.5), ev('c', 2), ev('d', 13), ev('e', 14), ev('f', 15), ev('g', 23), ev('h', 35)];
    const once = new PartitionWindows(0, opts);
    const emitted: PartialRecord[] = [];
    let committed = 0;
    for (let i = 0; i < 5; i++) {
      once.add(stream[i]!, i, 0);
      emitted.push(...once.collect(0).records);
      committed = once.commitOffset()!;
    }
    // Crash here: window 0 is final (offsets 0..2), window 1 still open from offset 1.
    expect(committed).toBe(1);
    const restarted = new PartitionWindows(0, opts, emitted);
    const results: string[] = [];
    for (let i = committed; i < stream.length; i++) results.push(restarted.add(stream[i]!, i, 0));
    expect(results).toEqual(['added', 'replayed', 'added', 'added', 'added', 'added', 'added']);
    const view = new AggregateView();
    for (const r of emitted) view.upsert(r);
    for (const r of restarted.collect(0, true).records) view.upsert(r);
    const reference = runAll(stream).view;
    const q = { by: 'all' as const, windowMs: 10_000 };
    expect(view.query(q).windows.map((w) => [w.start, w.rows[0]!.events, w.rows[0]!.duplicates, w.rows[0]!.late])).toEqual(
      reference.query(q).windows.map((w) => [w.start, w.rows[0]!.events, w.rows[0]!.duplicates, w.rows[0]!.late]),
    );
    expect(view.query(q).totals[0]!.events).toBe(8);
  });

  it('moves the watermark with the clock only after idleMs without events, and not while held', () => {
    const d = dataset();
    const eng = new PartitionWindows(0, { ...opts, idleMs: 2_000 });
    eng.add({ ...d.main[0]!, ts: T0 + 9_000 }, 0, 1_000_000);
    eng.advance(1_001_500);
    expect(eng.collect(1_001_500).records).toHaveLength(0);
    eng.holdIdle(1_005_000); // broker unreachable: the idle clock restarts
    eng.advance(1_006_000);
    expect(eng.watermark).toBe(T0 + 9_000);
    eng.advance(1_009_500); // 4.5 s idle since the hold → watermark + 2.5 s ≥ end + grace
    expect(eng.watermark).toBe(T0 + 11_500);
    const recs = eng.collect(1_009_500).records;
    expect(recs.length).toBeGreaterThan(0);
    expect(recs.every((r) => r.final)).toBe(true);
  });
});

describe('mergeable aggregates', () => {
  it('merging partials equals aggregating everything at once, through JSON', () => {
    const d = dataset();
    const whole = emptyAgg();
    const parts = [emptyAgg(), emptyAgg(), emptyAgg()];
    d.main.forEach((e, i) => {
      applyEvent(whole, e);
      applyEvent(parts[i % 3]!, e);
    });
    const merged = parts.map((p) => aggFromJson(JSON.parse(JSON.stringify(aggToJson(p))))).reduce((a, b) => mergeInto(a, b), emptyAgg());
    const mw = metricsOf(whole);
    const mm = metricsOf(merged);
    expect(mm.events).toBe(mw.events);
    expect(mm.vstP50Ms).toBe(mw.vstP50Ms);
    expect(mm.vstP99Ms).toBe(mw.vstP99Ms);
    expect(mm.rebufferRatio).toBeCloseTo(mw.rebufferRatio!, 12);
  });

  it("keeps video start time percentiles within the sketch's 1 % relative error", () => {
    const d = dataset();
    const a = emptyAgg();
    for (const e of d.main) if (e.type === 'startup' && e.sessionId.includes('-v')) applyEvent(a, e);
    const m = metricsOf(a);
    for (const [q, got] of [
      [0.5, m.vstP50Ms],
      [0.95, m.vstP95Ms],
      [0.99, m.vstP99Ms],
    ] as const) {
      const [lo, hi] = exactQuantiles(d.vstValues, q);
      expect(got).not.toBeNull();
      expect(got!).toBeGreaterThanOrEqual(lo * 0.99);
      expect(got!).toBeLessThanOrEqual(hi * 1.01);
    }
  });
});

describe('read side', () => {
  it('rolls 10 s windows up to 1 min by merging, and ignores a stale provisional record', () => {
    const d = dataset();
    const { view, engines } = runAll([...d.main, ...d.advance], 1);
    const m1 = view.query({ by: 'all', windowMs: 60_000 });
    expect(m1.windows).toHaveLength(1);
    expect(m1.windows[0]!.start).toBe(T0);
    expect(m1.windows[0]!.rows[0]!.events).toBe(EXPECTED.all.events);
    const finalRec = engines[0]!.collect(0, true).records;
    expect(finalRec).toHaveLength(0);
    const any = [...(view as unknown as { records: Map<string, PartialRecord> }).records.values()].find((r) => r.final && r.dim === 'all')!;
    view.upsert({ ...any, final: false, maxOffset: any.maxOffset - 1, agg: { events: 1 } });
    expect(view.query({ by: 'all', windowMs: 60_000 }).windows[0]!.rows[0]!.events).toBe(EXPECTED.all.events);
  });

  it('parses query parameters and names every problem', () => {
    const q = parseQoeQuery(new URLSearchParams('by=edge&window=1m&last=5m'), 10_000);
    expect(q).toMatchObject({ by: 'edge', windowMs: 60_000, lastMs: 300_000 });
    try {
      parseQoeQuery(new URLSearchParams('by=planet&window=7s&last=soon'), 10_000);
      expect.fail('should throw');
    } catch (err) {
      expect(isOcdnError(err, 'E_BAD_REQUEST')).toBe(true);
      expect((err as Error).message).toMatch(/by must be one of/);
      expect((err as Error).message).toMatch(/window must be a multiple/);
      expect((err as Error).message).toMatch(/last: "soon" is not a duration/);
    }
  });
});

import { describe, expect, it } from 'vitest';
import { runPlayers, summarize } from '../../player-sim/runner.ts';
import { MemorySink } from '../../player-sim/sinks.ts';
import { emptyAgg, metricsOf } from '../../telemetry/merge.ts';
import { rebufferRatio, reportedSeconds, videoStartMs, vstQuantileMs, vstSketch } from '../../telemetry/qoe-math.ts';
import { AggregateView } from '../../telemetry/view.ts';
import { PartitionWindows } from '../../telemetry/windows.ts';

describe('QoE math: one definition', () => {
  it('rebuffer ratio: Σstall / Σ(play + stall); null (not 0) when nothing played or stalled', () => {
    expect(rebufferRatio(0, 0)).toBeNull();
    expect(rebufferRatio(1.5, 20)).toBeCloseTo(1.5 / 21.5, 15);
    expect(rebufferRatio(0, 10)).toBe(0);
    expect(rebufferRatio(3, 0)).toBe(1);
  });

  it('VST: whole ms from session start to first frame; quantiles null when nobody started', () => {
    expect(videoStartMs(1_000, 1_734.6)).toBe(735);
    expect(reportedSeconds(12.34567)).toBe(12.346);
    expect(vstQuantileMs(vstSketch(), 0.5)).toBeNull();
    const p50 = vstQuantileMs(vstSketch([100, 200, 300, 400, 500]), 0.5)!;
    expect(Math.abs(p50 - 300) / 300).toBeLessThanOrEqual(0.01);
  });

  it('no data reads the same in the player summary and the aggregator', () => {
    const s = summarize([], { mode: 'virtual', abr: 'bba', network: 'x', seed: 1, players: 0, peakConcurrent: 0, simulatedMs: 0, wallMs: 0 });
    const m = metricsOf(emptyAgg());
    expect([s.rebufferRatio, s.vstP50Ms, s.vstP95Ms]).toEqual([null, null, null]);
    expect([m.rebufferRatio, m.vstP50Ms, m.vstP95Ms]).toEqual([null, null, null]);
  });

  it('the player summary and the aggregator give the same rebuffer ratio and VST for the same events', async () => {
    const sink = new MemorySink();
    // A sharp drop while buffers are short, so sessions do stall; starts spread over the ramp.
    const { summary } = await runPlayers({
      virtual: true,
      seed: 7,
      players: 30,
      rampMs: 5_000,
      durationMs: 600_000,
      network: 'step:10mbps,0.5mbps@10s',
      abr: 'throughput',
      loop: false,
      watchMeanS: 'full',
      sink,
      virtualCdn: { titles: 4, durationSec: 120 },
    });
    expect(summary.stalledS).toBeGreaterThan(0);
    expect(summary.started).toBeGreaterThan(10);

    // Through the aggregator's path: window engine → partial records (sketch in its wire form) → read side.
    const eng = new PartitionWindows(0, { windowMs: 10_000, graceMs: 3_600_000, idleMs: 0, lateRetentionMs: 3_600_000, provisionalMs: 0 });
    for (const [i, e] of sink.events.entries()) eng.add(e, i, 0);
    const view = new AggregateView({ retentionMs: Number.MAX_SAFE_INTEGER });
    for (const r of eng.collect(0, true).records) view.upsert(r);
    const all = view.query({ by: 'all', windowMs: 10_000 }).totals[0]!;

    expect(all.late + all.duplicates).toBe(0);
    expect(all.startups).toBe(summary.started);
    expect(all.rebufferRatio).not.toBeNull();
    expect(all.rebufferRatio!).toBeCloseTo(summary.rebufferRatio!, 12);
    expect(all.vstP50Ms).toBe(summary.vstP50Ms);
    expect(all.vstP95Ms).toBe(summary.vstP95Ms);
  });
});

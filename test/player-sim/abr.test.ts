import { describe, expect, it } from 'vitest';
import { abandonTo, BbaAbr, BolaAbr, createAbr, DynamicAbr, ThroughputAbr, ThroughputEstimator, type AbrState } from '../../player-sim/abr/index.ts';
import { bolaParams } from '../../player-sim/abr/bola.ts';
import { runPlayers } from '../../player-sim/runner.ts';

const APPLE = [145, 365, 730, 1100, 2000, 3000, 4500, 6000, 7800].map((k) => k * 1000);

function state(over: Partial<AbrState>): AbrState {
  return {
    bitrates: APPLE,
    segmentDurationS: 4,
    bufferS: 10,
    lastIndex: 0,
    throughputBps: undefined,
    nowS: 0,
    lastDownload: undefined,
    rebuffered: false,
    starting: false,
    abandoned: undefined,
    ...over,
  };
}

describe('ABR rules', () => {
  it('throughput: ≤ 0.95 × estimate to stay, ≤ 0.7 × estimate to go up', () => {
    const abr = new ThroughputAbr();
    const at3000 = APPLE.indexOf(3_000_000);
    const at4500 = APPLE.indexOf(4_500_000);
    // 5 Mbps: 4500k fits 0.95× (4.75) but not 0.7× (3.5): stay if there, do not climb to it.
    expect(abr.decide(state({ throughputBps: 5e6, lastIndex: at3000 }))).toBe(at3000);
    expect(abr.decide(state({ throughputBps: 5e6, lastIndex: at4500 }))).toBe(at4500);
    expect(abr.decide(state({ throughputBps: 5e6, lastIndex: -1 }))).toBe(at3000);
    // 4.6 Mbps at 4500k: 4500 > 0.95 × 4.6 = 4.37 → down to 3000k
    expect(abr.decide(state({ throughputBps: 4.6e6, lastIndex: at4500 }))).toBe(at3000);
    // no estimate yet: hls.js's 500 kbit/s default → 0.7 × 500 = 350 → 145k
    expect(abr.decide(state({ lastIndex: -1 }))).toBe(0);
  });

  it('the estimator is hls.js dual EWMA: the lower of 3 s and 9 s half-lives, exact on a constant rate', () => {
    const e = new ThroughputEstimator();
    expect(e.estimate()).toBe(500_000);
    expect(e.measured()).toBeUndefined();
    e.sample(2_000, 1_250_000); // 5 Mbps
    expect(e.estimate()).toBeCloseTo(5e6, 0);
    e.sample(4_000, 500_000); // 1 Mbps for 4 s
    // fast (3 s) drops further than slow (9 s); the estimate is the fast one
    const fastWeightOld = 0.5 ** (4 / 3);
    const slowWeightOld = 0.5 ** (4 / 9);
    const zf = (hl: number) => 1 - 0.5 ** (6 / hl);
    const fast = ((1 - fastWeightOld) * 1e6 + fastWeightOld * (1 - 0.5 ** (2 / 3)) * 5e6) / zf(3);
    const slow = ((1 - slowWeightOld) * 1e6 + slowWeightOld * (1 - 0.5 ** (2 / 9)) * 5e6) / zf(9);
    expect(e.estimate()).toBeCloseTo(Math.min(fast, slow), 0);
    expect(fast).toBeLessThan(slow);
  });

  it('bba: lowest in the reservoir, highest past the cushion, one-rung hysteresis between', () => {
    const abr = new BbaAbr({ reservoirS: 8, cushionS: 16 });
    expect(abr.decide(state({ bufferS: 5, lastIndex: 4 }))).toBe(0);
    expect(abr.decide(state({ bufferS: 25, lastIndex: 0 }))).toBe(8);
    // f(16 s) = 145k + (7800k − 145k) / 2 ≈ 3972k: from 2000k it climbs to the highest rung below f → 3000k
    expect(abr.decide(state({ bufferS: 16, lastIndex: 4 }))).toBe(5);
    // at 3000k with f ≈ 3972k (between 2000k and 4500k): stays
    expect(abr.decide(state({ bufferS: 16, lastIndex: 5 }))).toBe(5);
  });

  it('bola: dash.js parameters for the Apple ladder and buffer-driven choices', () => {
    const p = bolaParams(APPLE)!;
    // bufferTime = max(12, 10 + 2 × 9) = 28 s; gp = (u_max − 1) / (28/10 − 1); Vp = 10 / gp
    const uMax = Math.log(7_800_000 / 145_000) + 1;
    expect(p.gp).toBeCloseTo((uMax - 1) / 1.8, 9);
    expect(p.Vp).toBeCloseTo(10 / p.gp, 9);
    // BOLA's own choice prefers the lowest rung at 10 s of buffer and the top at 28 s
    const score = (i: number, q: number) => (p.Vp * (p.utilities[i]! + p.gp) - q) / APPLE[i]!;
    const best = (q: number) => APPLE.map((_, i) => score(i, q)).reduce((bi, s, i, all) => (s >= all[bi]! ? i : bi), 0);
    expect(best(9)).toBe(0);
    expect(best(28.5)).toBe(8);

    const abr = new BolaAbr();
    // startup: no sample → lowest
    expect(abr.decide(state({ bufferS: 0, lastIndex: -1 }))).toBe(0);
    // startup with a sample: throughput rule with 0.9 safety, capped by the buffer guard
    expect(abr.decide(state({ bufferS: 4, throughputBps: 5e6, lastDownload: { index: 0, requestS: 0, finishS: 0.1, durationS: 4 } }))).toBe(
      APPLE.indexOf(2_000_000),
    );
  });

  it('dynamic: rate rule under 9 s of buffer, BOLA over 18 s, keeps its mode in between', () => {
    const abr = new DynamicAbr();
    const s = (bufferS: number) => state({ bufferS, throughputBps: 5e6, lastIndex: 3, lastDownload: { index: 3, requestS: 0, finishS: 1, durationS: 4 } });
    abr.decide(s(5));
    expect(abr.mode).toBe('throughput');
    abr.decide(s(12));
    expect(abr.mode).toBe('throughput');
    abr.decide(s(19));
    expect(abr.mode).toBe('bola');
    abr.decide(s(12));
    expect(abr.mode).toBe('bola');
    abr.decide(s(8));
    expect(abr.mode).toBe('throughput');
  });

  it('abandonment: projected > 1.8 × segment duration → retry at what 0.8 × the measured rate carries', () => {
    const base = { segmentDurationS: 4, bitrates: APPLE, index: 5, ttfbMs: 20 };
    // 3000k segment (1.5 MB), 1 s in at 1 Mbps measured: 125 kB done, 11 s to go → abandon
    expect(abandonTo({ ...base, elapsedMs: 1_020, bytes: 125_000, totalBytes: 1_500_000 })).toBe(APPLE.indexOf(730_000));
    // at 5 Mbps it finishes in 2.4 s: carry on
    expect(abandonTo({ ...base, elapsedMs: 1_020, bytes: 625_000, totalBytes: 1_500_000 })).toBeUndefined();
    // the lowest rung is never abandoned
    expect(abandonTo({ ...base, index: 0, elapsedMs: 60_000, bytes: 1, totalBytes: 1_500_000 })).toBeUndefined();
    // nothing arrived for longer than the limit: drop to the lowest
    expect(abandonTo({ ...base, elapsedMs: 7_300, bytes: 0, totalBytes: undefined })).toBe(0);
  });

  it('createAbr rejects unknown names', () => {
    expect(() => createAbr('mpc')).toThrow(/unknown ABR/);
  });
});

describe('ABR sanity in virtual time (Apple ladder)', () => {
  it('throughput on constant 5 Mbps settles at 3000 kbps within 5 segments and never stalls', async () => {
    const { sessions, summary } = await runPlayers({
      virtual: true,
      abr: 'throughput',
      network: 'const:5mbps',
      players: 10,
      rampMs: 10_000,
      durationMs: 600_000,
      loop: false,
      watchMeanS: 'full',
      recordSegments: true,
      virtualCdn: { titles: 5, durationSec: 120, ladder: 'apple' },
    });
    expect(sessions).toHaveLength(10);
    expect(summary.stalledS).toBe(0);
    for (const s of sessions) {
      expect(s.exitReason).toBe('completed');
      const kept = s.segments!.filter((x) => !x.abandoned);
      expect(kept.length).toBe(30);
      const first3000 = kept.findIndex((x) => x.bitrate === 3_000_000);
      expect(first3000).toBeGreaterThanOrEqual(0);
      expect(first3000).toBeLessThan(5);
      // settled: every segment from there on is 3000k
      expect(kept.slice(first3000).every((x) => x.bitrate === 3_000_000)).toBe(true);
    }
  });

  it('on a step-down trace BOLA and dynamic stall less than throughput', async () => {
    // A sharp drop 10 s in, while buffers are still short: the rate rule's EWMA still believes
    // in 10 Mbps and overshoots; the buffer-aware rules do not.
    const run = (abr: 'throughput' | 'bola' | 'dynamic') =>
      runPlayers({
        virtual: true,
        abr,
        network: 'step:10mbps,0.5mbps@10s',
        players: 30,
        rampMs: 5_000,
        durationMs: 600_000,
        loop: false,
        watchMeanS: 'full',
        virtualCdn: { titles: 5, durationSec: 120 },
      });
    const [t, b, d] = await Promise.all([run('throughput'), run('bola'), run('dynamic')]);
    expect(t.summary.stalledS).toBeGreaterThan(5);
    expect(b.summary.stalledS).toBeLessThan(t.summary.stalledS);
    expect(d.summary.stalledS).toBeLessThan(t.summary.stalledS);
    for (const r of [t, b, d]) expect(r.summary.exitReasons.completed).toBe(30);
  });
});

/**
 * The one definition of the QoE figures that both the player summary (player-sim/runner.ts)
 * and the aggregator (merge.ts → view.ts → the CLI and /v1/qoe) report, so the same events
 * give the same numbers wherever they are read.
 *
 * No data is `null`, never 0: a window or run in which nothing played has not shown perfect
 * playback, and a 0 would read as the best edge (pulling peers' medians down in steering's
 * QoE demotion); NaN is not JSON. Views print it as "-".
 */
import { newSketch, quantile, type Sketch } from './sketch.ts';

/** Σ stalled / Σ (played + stalled), from session ends; null when nothing was played or stalled. */
export function rebufferRatio(stalledS: number, playedS: number): number | null {
  const total = playedS + stalledS;
  return total > 0 ? stalledS / total : null;
}

/** Seconds as players report them in events (ms precision), and so as the summary counts them. */
export function reportedSeconds(s: number): number {
  return Math.round(s * 1000) / 1000;
}

/**
 * Video start time of a session: session start to first frame, whole ms. It is what the
 * `startup` event carries, and sessions with no startup event have none (they are start
 * failures or exits before start, counted on their own, not as a VST of 0 or of the timeout).
 */
export function videoStartMs(sessionStartMs: number, firstFrameMs: number): number {
  return Math.round(firstFrameMs - sessionStartMs);
}

/** The VST distribution, in the aggregator's mergeable sketch (±1 % relative accuracy). */
export function vstSketch(values: Iterable<number> = []): Sketch {
  const s = newSketch();
  for (const v of values) s.accept(v);
  return s;
}

/** VST at quantile q (0.5 = p50) of a sketch; null when no session started. */
export function vstQuantileMs(s: Sketch, q: number): number | null {
  const v = quantile(s, q);
  // To the microsecond: the sketch is 1 % accurate, and the digits below come from whether a
  // sketch's index mapping was built fresh or decoded (gamma round-trips through the protobuf
  // with a last-bit difference), which would make equal aggregates print differently.
  return v === null ? null : Math.round(v * 1000) / 1000;
}

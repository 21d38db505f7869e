import type { AbrState } from './types.ts';

/** dash.js INSUFFICIENT_BUFFER_SAFETY_FACTOR (and BolaRule's REBUFFER_SAFETY_FACTOR before it). */
export const INSUFFICIENT_BUFFER_SAFETY_FACTOR = 0.5;

/**
 * dash.js's InsufficientBufferRule, which its rules collection applies on top of whichever
 * main rule runs: never choose a bit rate above 0.5 × throughput × buffer / segment duration,
 * i.e. one whose download at the measured rate would eat more than half the buffer. Lowers
 * `q` until it fits (index 0 always does).
 */
export function capForBuffer(s: AbrState, q: number): number {
  if (s.throughputBps === undefined || !(s.segmentDurationS > 0)) return q;
  const safeBitrate = (INSUFFICIENT_BUFFER_SAFETY_FACTOR * s.throughputBps * s.bufferS) / s.segmentDurationS;
  while (q > 0 && s.bitrates[q]! > safeBitrate) q--;
  return q;
}

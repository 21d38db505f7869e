import { indexForBitrate } from './types.ts';

export interface AbandonInput {
  elapsedMs: number;
  ttfbMs: number;
  bytes: number;
  totalBytes: number | undefined;
  segmentDurationS: number;
  index: number;
  bitrates: readonly number[];
}

/** Beyond this multiple of the segment's duration, a download is abandoned. */
export const ABANDON_FACTOR = 1.8;
/** The retry goes to a rendition this fraction of the measured rate can carry. */
const RETRY_SAFETY = 0.8;
/** Need this much transfer time before a rate measured on this download means anything. */
const MIN_MEASURE_MS = 200;

/**
 * Abandonment, shared by both modes: if the download in flight is projected to take more
 * than 1.8× the segment's duration, stop it and refetch the segment lower. Returns the
 * rendition to retry at, or undefined to carry on. Nothing lower exists at index 0, so the
 * lowest rendition is never abandoned.
 */
export function abandonTo(p: AbandonInput): number | undefined {
  if (p.index <= 0) return undefined;
  const limitMs = ABANDON_FACTOR * p.segmentDurationS * 1000;
  const transferMs = p.elapsedMs - p.ttfbMs;
  if (p.bytes === 0) {
    // Nothing arrived at all: only the clock can tell, and it says stop.
    return p.elapsedMs > limitMs ? 0 : undefined;
  }
  if (p.totalBytes === undefined || transferMs < MIN_MEASURE_MS) return undefined;
  const rate = (p.bytes * 8) / (transferMs / 1000);
  const projectedMs = p.elapsedMs + ((p.totalBytes - p.bytes) * 8 * 1000) / rate;
  if (projectedMs <= limitMs) return undefined;
  return Math.min(p.index - 1, indexForBitrate(p.bitrates, RETRY_SAFETY * rate));
}

/**
 * The one ABR interface both modes share. The session fills an AbrState before every segment
 * and uses the index `decide` returns; nothing here does I/O or reads a clock, so a decision
 * depends only on the sequence of states it was shown (which is what makes virtual runs
 * reproducible and lets the same algorithm objects run over sockets).
 */
import type { CmsdHint } from './cmsd-hint.ts';

export const ABR_NAMES = ['throughput', 'bba', 'bola', 'dynamic'] as const;
export type AbrName = (typeof ABR_NAMES)[number];

export interface LastDownload {
  /** Rendition index it was fetched at. */
  index: number;
  /** Session seconds when its request started and its last byte arrived. */
  requestS: number;
  finishS: number;
  /** Media seconds it added to the buffer. */
  durationS: number;
}

export interface AbrState {
  /** Rendition bit rates, ascending, bits/s. */
  bitrates: readonly number[];
  /** Duration of the segment being decided, seconds. */
  segmentDurationS: number;
  /** Media seconds buffered ahead of the playhead. */
  bufferS: number;
  /** Rendition of the last segment appended; -1 before the first. */
  lastIndex: number;
  /** Bandwidth estimate (bits/s) from the session's estimator; undefined before any sample. */
  throughputBps: number | undefined;
  /** Session seconds now. */
  nowS: number;
  /** The most recent completed download, if any completed since the previous decision. */
  lastDownload: LastDownload | undefined;
  /** The buffer ran dry since the previous decision (or playback is stalled now). */
  rebuffered: boolean;
  /** Playback has not started yet. */
  starting: boolean;
  /** Set when the previous download of this segment was abandoned at `fromIndex`. */
  abandoned: { fromIndex: number; toIndex: number } | undefined;
  /** The serving edge's CMSD-Dynamic of the last segment (only with the hint on; abr/cmsd-hint.ts). */
  cmsd?: CmsdHint;
}

export interface Abr {
  readonly name: AbrName;
  decide(state: AbrState): number;
}

/** Highest index whose bit rate is ≤ bps; 0 when none is. */
export function indexForBitrate(bitrates: readonly number[], bps: number): number {
  let q = 0;
  for (let i = 0; i < bitrates.length; i++) {
    if (bitrates[i]! <= bps) q = i;
    else break;
  }
  return q;
}

import { duressCap, hintedEstimate } from './cmsd-hint.ts';
import type { Abr, AbrState } from './types.ts';

export interface ThroughputOptions {
  /** Stay at or go down to a rendition whose bit rate is ≤ this × estimate (hls.js abrBandWidthFactor). */
  stayFactor?: number;
  /** Switch up only to a rendition whose bit rate is ≤ this × estimate (hls.js abrBandWidthUpFactor). */
  upFactor?: number;
  /** Estimate to use before any sample, bits/s (hls.js abrEwmaDefaultEstimate). */
  defaultBps?: number;
}

/**
 * hls.js-style rate-based choice: the highest rendition that fits the estimate, with a
 * stricter margin for going up than for staying, which is what stops it oscillating between
 * two rungs around the link rate.
 */
export class ThroughputAbr implements Abr {
  readonly name = 'throughput' as const;
  private readonly stay: number;
  private readonly up: number;
  private readonly defaultBps: number;

  constructor(opts: ThroughputOptions = {}) {
    this.stay = opts.stayFactor ?? 0.95;
    this.up = opts.upFactor ?? 0.7;
    this.defaultBps = opts.defaultBps ?? 500_000;
  }

  decide(s: AbrState): number {
    // A CMSD hint (abr/cmsd-hint.ts) only ever lowers the choice.
    const est = hintedEstimate(s.throughputBps ?? this.defaultBps, s.cmsd);
    return duressCap(this.fit(s, est), s);
  }

  private fit(s: AbrState, est: number): number {
    for (let i = s.bitrates.length - 1; i > 0; i--) {
      const factor = i <= s.lastIndex ? this.stay : this.up;
      if (s.bitrates[i]! <= factor * est) return i;
    }
    return 0;
  }
}

import type { Abr, AbrState } from './types.ts';

export interface BbaOptions {
  /** Below this much buffer: lowest rendition (seconds). */
  reservoirS?: number;
  /** Buffer span over which the rate map climbs from lowest to highest (seconds). */
  cushionS?: number;
}

/**
 * BBA-0 (Huang et al., SIGCOMM 2014): the rate map f(B) is linear from the lowest bit rate at
 * the reservoir to the highest at reservoir + cushion. It moves off the current rendition only
 * when f(B) passes the next rung up (then to the highest rung below f(B)) or falls below the
 * next rung down (then to the lowest rung above f(B)), which gives it hysteresis of one rung.
 * The defaults scale the paper's 90 s / 126 s of a 240 s buffer down to a 30 s player buffer.
 */
export class BbaAbr implements Abr {
  readonly name = 'bba' as const;
  private readonly reservoir: number;
  private readonly cushion: number;

  constructor(opts: BbaOptions = {}) {
    this.reservoir = opts.reservoirS ?? 8;
    this.cushion = opts.cushionS ?? 16;
  }

  decide(s: AbrState): number {
    const rates = s.bitrates;
    const top = rates.length - 1;
    if (top <= 0) return 0;
    const cur = Math.min(Math.max(s.lastIndex, 0), top);
    const B = s.bufferS;
    if (B <= this.reservoir) return 0;
    if (B >= this.reservoir + this.cushion) return top;
    const f = rates[0]! + ((rates[top]! - rates[0]!) * (B - this.reservoir)) / this.cushion;
    const plus = rates[Math.min(cur + 1, top)]!;
    const minus = rates[Math.max(cur - 1, 0)]!;
    if (cur < top && f >= plus) {
      let q = cur;
      for (let i = cur; i <= top; i++) if (rates[i]! < f) q = i;
      return q;
    }
    if (cur > 0 && f <= minus) {
      for (let i = 0; i <= cur; i++) if (rates[i]! > f) return i;
      return cur;
    }
    return cur;
  }
}

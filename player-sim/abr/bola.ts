import { capForBuffer } from './insufficient-buffer.ts';
import { indexForBitrate, type Abr, type AbrState } from './types.ts';

/**
 * BOLA as dash.js's BolaRule implements it (BOLA-E with the placeholder buffer and BOLA-O's
 * anti-oscillation cap). Parameters are dash.js's: utilities ln(bitrate) normalised so the
 * lowest is 1; the lowest rendition is preferred at MINIMUM_BUFFER_S = 10 s of buffer and the
 * top at max(stableBufferTime = 12 s, 10 + 2 s × rungs); a 0.9 bandwidth safety factor on
 * throughput in startup and in the BOLA-O cap; placeholder decay 0.99 per segment.
 *
 * BOLA itself ignores how long the next download takes, so dash.js pairs it with a rebuffer
 * guard (in BolaRule up to v2.x, InsufficientBufferRule since): never pick a bit rate above
 * 0.5 × throughput × buffer / segment duration. It is applied here in both states; without it
 * the first steady choice can be the top rung with one segment buffered.
 *
 * One difference: dash.js can ask its scheduler to pause before a low-quality download
 * ("don't overfill the buffer with low quality"); this simulator's player has a fixed buffer
 * cap instead, so that delay only drains the placeholder here.
 */
export const BOLA = {
  MINIMUM_BUFFER_S: 10,
  MINIMUM_BUFFER_PER_BITRATE_LEVEL_S: 2,
  STABLE_BUFFER_TIME_S: 12,
  BANDWIDTH_SAFETY_FACTOR: 0.9,
  PLACEHOLDER_BUFFER_DECAY: 0.99,
} as const;

interface Params {
  key: string;
  utilities: number[];
  Vp: number;
  gp: number;
}

export function bolaParams(bitrates: readonly number[], stableBufferTimeS: number = BOLA.STABLE_BUFFER_TIME_S): Params | undefined {
  if (bitrates.length < 2) return undefined;
  const u0 = Math.log(bitrates[0]!);
  const utilities = bitrates.map((b) => Math.log(b) - u0 + 1);
  const top = utilities.reduce((hi, u, i) => (u > utilities[hi]! ? i : hi), 0);
  if (top === 0) return undefined;
  const bufferTime = Math.max(stableBufferTimeS, BOLA.MINIMUM_BUFFER_S + BOLA.MINIMUM_BUFFER_PER_BITRATE_LEVEL_S * bitrates.length);
  const gp = (utilities[top]! - 1) / (bufferTime / BOLA.MINIMUM_BUFFER_S - 1);
  const Vp = BOLA.MINIMUM_BUFFER_S / gp;
  return { key: bitrates.join(','), utilities, Vp, gp };
}

export class BolaAbr implements Abr {
  readonly name = 'bola' as const;
  private params: Params | undefined;
  private state: 'startup' | 'steady' = 'startup';
  private placeholder = 0;
  private lastQuality = 0;
  private lastCallS: number | undefined;
  private lastFinishS: number | undefined;
  private lastSegmentDurationS: number | undefined;

  constructor(private readonly stableBufferTimeS: number = BOLA.STABLE_BUFFER_TIME_S) {}

  private scoreIndex(p: Params, bitrates: readonly number[], buffer: number): number {
    let quality = 0;
    let score = Number.NaN;
    for (let i = 0; i < bitrates.length; i++) {
      const s = (p.Vp * (p.utilities[i]! + p.gp) - buffer) / bitrates[i]!;
      if (Number.isNaN(score) || s >= score) {
        score = s;
        quality = i;
      }
    }
    return quality;
  }

  /** Largest buffer at which BOLA still prefers downloading `q` to waiting. */
  private maxBufferFor(p: Params, q: number): number {
    return p.Vp * (p.utilities[q]! + p.gp);
  }

  /** Smallest buffer at which BOLA prefers `q` over every lower rendition. */
  private minBufferFor(p: Params, bitrates: readonly number[], q: number): number {
    let min = 0;
    for (let i = q - 1; i >= 0; i--) {
      if (p.utilities[i]! < p.utilities[q]!) {
        const level = p.Vp * (p.gp + (bitrates[q]! * p.utilities[i]! - bitrates[i]! * p.utilities[q]!) / (bitrates[q]! - bitrates[i]!));
        min = Math.max(min, level);
      }
    }
    return min;
  }

  decide(s: AbrState): number {
    const rates = s.bitrates;
    if (!this.params || this.params.key !== rates.join(',')) {
      this.params = bolaParams(rates, this.stableBufferTimeS);
      this.state = 'startup';
      this.placeholder = 0;
    }
    const p = this.params;
    if (!p) return 0;
    const buffer = s.bufferS;

    if (s.lastDownload) {
      // dash.js checkNewSegment: decay the placeholder and never let it claim more than the
      // buffer the last segment's quality was chosen for.
      this.lastQuality = s.lastDownload.index;
      this.lastSegmentDurationS = s.lastDownload.durationS;
      this.placeholder *= BOLA.PLACEHOLDER_BUFFER_DECAY;
      const bufferAtRequest = buffer + (s.lastDownload.finishS - s.lastDownload.requestS);
      this.placeholder = Math.min(this.placeholder, Math.max(0, this.maxBufferFor(p, this.lastQuality) - bufferAtRequest));
      this.lastFinishS = s.lastDownload.finishS;
    }
    if (s.rebuffered && this.state === 'steady') this.placeholder = 0;
    if (s.abandoned) {
      const want = s.abandoned.toIndex > 0 ? this.minBufferFor(p, rates, s.abandoned.toIndex) : BOLA.MINIMUM_BUFFER_S;
      this.placeholder = Math.min(this.placeholder, Math.max(0, want - buffer));
    }

    if (s.throughputBps === undefined) {
      // dash.js leaves the first choice to other rules; the lowest rung is the safe one.
      this.lastCallS = s.nowS;
      return 0;
    }
    const safe = s.throughputBps * BOLA.BANDWIDTH_SAFETY_FACTOR;

    const guard = (q: number): number => capForBuffer(s, q);

    if (this.state === 'startup') {
      const q = guard(indexForBitrate(rates, safe));
      this.placeholder = Math.max(0, this.minBufferFor(p, rates, q) - buffer);
      this.lastQuality = q;
      if (this.lastSegmentDurationS !== undefined && buffer >= this.lastSegmentDurationS) this.state = 'steady';
      this.lastCallS = s.nowS;
      this.lastFinishS = undefined;
      return q;
    }

    // dash.js updatePlaceholderBuffer: time spent not downloading (buffer full, waiting) is
    // credited so that waiting does not by itself lower the next choice.
    if (this.lastFinishS !== undefined) this.placeholder += Math.max(0, s.nowS - this.lastFinishS);
    else if (this.lastCallS !== undefined) this.placeholder += Math.max(0, s.nowS - this.lastCallS);
    this.lastCallS = s.nowS;
    this.lastFinishS = undefined;

    let q = this.scoreIndex(p, rates, buffer + this.placeholder);
    // BOLA-O: do not climb above what the link sustains; never drop below the last choice for it.
    const qThroughput = indexForBitrate(rates, safe);
    if (q > this.lastQuality && q > qThroughput) q = Math.max(qThroughput, this.lastQuality);
    q = guard(q);

    const delay = Math.max(0, buffer + this.placeholder - this.maxBufferFor(p, q));
    this.placeholder = delay <= this.placeholder ? this.placeholder - delay : 0;
    this.lastQuality = q;
    return q;
  }
}

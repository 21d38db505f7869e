/**
 * hls.js's EwmaBandWidthEstimator: two exponentially weighted moving averages of throughput,
 * each sample weighted by its download duration (seconds), with half-lives of 3 s and 9 s;
 * the estimate is the lower of the two (quick to drop, slow to rise). The zero-factor
 * correction removes the bias toward the initial 0 while little weight has accumulated.
 */
class Ewma {
  private readonly alpha: number;
  private estimate = 0;
  totalWeight = 0;

  constructor(halfLifeS: number) {
    this.alpha = Math.exp(Math.log(0.5) / halfLifeS);
  }

  sample(weight: number, value: number): void {
    const adj = this.alpha ** weight;
    this.estimate = value * (1 - adj) + adj * this.estimate;
    this.totalWeight += weight;
  }

  get(): number {
    const zeroFactor = 1 - this.alpha ** this.totalWeight;
    return zeroFactor > 0 ? this.estimate / zeroFactor : this.estimate;
  }
}

export interface EstimatorOptions {
  fastHalfLifeS?: number;
  slowHalfLifeS?: number;
  /** hls.js default estimate before any sample: 500 kbit/s. */
  defaultBps?: number;
  /** Samples shorter than this are stretched to it (hls.js: 50 ms), so a tiny object on a fast link cannot claim near-infinite bandwidth. */
  minDelayMs?: number;
}

export class ThroughputEstimator {
  private readonly fast: Ewma;
  private readonly slow: Ewma;
  private readonly defaultBps: number;
  private readonly minDelayMs: number;
  samples = 0;

  constructor(opts: EstimatorOptions = {}) {
    this.fast = new Ewma(opts.fastHalfLifeS ?? 3);
    this.slow = new Ewma(opts.slowHalfLifeS ?? 9);
    this.defaultBps = opts.defaultBps ?? 500_000;
    this.minDelayMs = opts.minDelayMs ?? 50;
  }

  sample(durationMs: number, bytes: number): void {
    if (!(bytes > 0)) return;
    const ms = Math.max(durationMs, this.minDelayMs);
    const bps = (bytes * 8) / (ms / 1000);
    this.fast.sample(ms / 1000, bps);
    this.slow.sample(ms / 1000, bps);
    this.samples++;
  }

  /** Bits/s; the default until a sample has been taken. */
  estimate(): number {
    if (this.fast.totalWeight < 0.001) return this.defaultBps;
    return Math.min(this.fast.get(), this.slow.get());
  }

  /** undefined before the first sample (for rules that must know the estimate is a guess). */
  measured(): number | undefined {
    return this.samples === 0 ? undefined : this.estimate();
  }
}

/**
 * Zipf(s) sampler over ranks 1..n by inverse CDF on a precomputed table: O(log n) per draw,
 * deterministic for a given uniform source. Used for title popularity everywhere (players,
 * load tests, steering simulations) so they all mean the same workload by "zipf:0.9".
 */
export class Zipf {
  private readonly cdf: Float64Array;

  constructor(
    readonly n: number,
    readonly s: number,
  ) {
    if (!Number.isInteger(n) || n < 1) throw new Error(`Zipf needs n ≥ 1, got ${n}`);
    if (!(s >= 0)) throw new Error(`Zipf needs s ≥ 0, got ${s}`);
    this.cdf = new Float64Array(n);
    let sum = 0;
    for (let k = 1; k <= n; k++) {
      sum += 1 / k ** s;
      this.cdf[k - 1] = sum;
    }
    for (let i = 0; i < n; i++) this.cdf[i]! /= sum;
  }

  /** A rank in 1..n from a uniform draw u in [0, 1). */
  rank(u: number): number {
    let lo = 0;
    let hi = this.n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.cdf[mid]! > u) hi = mid;
      else lo = mid + 1;
    }
    return lo + 1;
  }

  /** Probability of rank k. */
  p(k: number): number {
    return this.cdf[k - 1]! - (k > 1 ? this.cdf[k - 2]! : 0);
  }
}

/** Small seeded PRNG (mulberry32): fast, good enough for workloads, reproducible from a seed. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

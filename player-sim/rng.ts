import { createHash } from 'node:crypto';
import { mulberry32 } from '../common/zipf.ts';

/**
 * Everything random in a run is derived from (seed, names…) by hashing, never from a shared
 * stream: session 17's trace, title and ids then do not depend on how many draws sessions
 * 0–16 made, so adding a session or an event type leaves every other session unchanged.
 */
export function hash32(...parts: (string | number)[]): number {
  return createHash('sha256').update(parts.join('\u0000')).digest().readUInt32BE(0);
}

export type Rng = () => number;

export function rngFor(...parts: (string | number)[]): Rng {
  return mulberry32(hash32(...parts));
}

/**
 * A UUID-shaped id from a hash (version nibble 4, RFC 4122 variant) so validators that
 * expect v4 accept it; it is deterministic on purpose (same seed → same event ids).
 */
export function uuidFrom(...parts: (string | number)[]): string {
  const h = createHash('sha256').update(parts.join('\u0000')).digest();
  h[6] = (h[6]! & 0x0f) | 0x40;
  h[8] = (h[8]! & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20, 32)}`;
}

/** Standard normal draw (Box–Muller); consumes two uniforms. */
export function normal(rng: Rng): number {
  const u1 = 1 - rng(); // (0, 1]: log(0) would be -∞
  const u2 = rng();
  return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
}

/** Exponential draw with the given mean. */
export function exponential(rng: Rng, mean: number): number {
  return -Math.log(1 - rng()) * mean;
}

/** Number of trials up to and including the first success, success probability p (≥ 1). */
export function geometric(rng: Rng, p: number): number {
  if (p >= 1) return 1;
  if (p <= 0) return Number.POSITIVE_INFINITY;
  return Math.max(1, Math.ceil(Math.log(1 - rng()) / Math.log(1 - p)));
}

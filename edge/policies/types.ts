/**
 * The eviction-policy seam of the edge cache. A store only decides what stays under a byte
 * budget; freshness (TTL), stale-if-error, negative entries and request coalescing live in
 * EdgeCache above it, so every policy gets the same semantics. Sizes are the caller's (the
 * entry's body plus its bookkeeping overhead).
 */

export const CACHE_POLICIES = ['lru', 'sieve', 's3fifo'] as const;
export type CachePolicy = (typeof CACHE_POLICIES)[number];
export const DEFAULT_CACHE_POLICY: CachePolicy = 'lru';

export function isCachePolicy(s: string): s is CachePolicy {
  return (CACHE_POLICIES as readonly string[]).includes(s);
}

export type EvictReason = 'evict' | 'delete' | 'set' | 'clear';

export interface ByteStoreOptions<V> {
  /** Byte budget: the sum of sizes held never exceeds it after a set returns. */
  maxBytes: number;
  /** Largest single entry accepted (default maxBytes / 4); a larger set is refused. */
  maxEntryBytes?: number;
  /**
   * Called once for every value that leaves: 'evict' when the policy pushed it out, 'delete' on
   * delete(), 'set' when a set replaced it, 'clear' on clear().
   */
  onRemove?: (key: string, value: V, reason: EvictReason) => void;
}

/** A byte-bounded map with one eviction policy. Synchronous: the edge's hit path calls get() per request. */
export interface ByteStore<V> {
  readonly policy: CachePolicy;
  readonly maxBytes: number;
  /** Sum of sizes held. */
  readonly bytes: number;
  /** Entries held. */
  readonly size: number;
  /** The value, counted as an access (a hit for the policy). */
  get(key: string): V | undefined;
  /** The value, without counting an access. */
  peek(key: string): V | undefined;
  has(key: string): boolean;
  /**
   * Inserts or replaces; evicts by the policy until the budget holds. False (and nothing stored,
   * an old value under `key` removed) when `size` exceeds maxEntryBytes.
   */
  set(key: string, value: V, size: number): boolean;
  delete(key: string): boolean;
  /** Keys held, in no promised order. */
  keys(): IterableIterator<string>;
  clear(): void;
}

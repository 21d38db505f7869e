import type { ByteStoreOptions, EvictReason } from './types.ts';

/** The options every store checks the same way, so a bad budget fails at construction, not on first set. */
export interface Budget<V> {
  maxBytes: number;
  maxEntryBytes: number;
  onRemove: ((key: string, value: V, reason: EvictReason) => void) | undefined;
}

export function resolveBudget<V>(opts: ByteStoreOptions<V>): Budget<V> {
  const { maxBytes } = opts;
  if (!Number.isSafeInteger(maxBytes) || maxBytes < 1) throw new TypeError(`maxBytes must be a positive integer, got ${maxBytes}`);
  const maxEntryBytes = opts.maxEntryBytes ?? Math.max(1, Math.floor(maxBytes / 4));
  if (!Number.isSafeInteger(maxEntryBytes) || maxEntryBytes < 1 || maxEntryBytes > maxBytes) {
    throw new TypeError(`maxEntryBytes must be an integer in 1..maxBytes (${maxBytes}), got ${maxEntryBytes}`);
  }
  return { maxBytes, maxEntryBytes, onRemove: opts.onRemove };
}

/** Sizes are whole bytes ≥ 1: lru-cache refuses anything else, and the other stores mean the same. */
export function checkSize(size: number): void {
  if (!Number.isSafeInteger(size) || size < 1) throw new TypeError(`entry size must be a positive integer, got ${size}`);
}

import { LruStore } from './lru.ts';
import { S3FifoStore } from './s3fifo.ts';
import { SieveStore } from './sieve.ts';
import type { ByteStore, ByteStoreOptions, CachePolicy } from './types.ts';

export * from './types.ts';
export { LruStore, S3FifoStore, SieveStore };

/** The store for `policy`. Values must not be undefined: get() returns undefined for a miss. */
export function createByteStore<V extends NonNullable<unknown>>(policy: CachePolicy, opts: ByteStoreOptions<V>): ByteStore<V> {
  switch (policy) {
    case 'lru':
      return new LruStore<V>(opts);
    case 'sieve':
      return new SieveStore<V>(opts);
    case 's3fifo':
      return new S3FifoStore<V>(opts);
  }
}

/** The largest object an edge store of `capacityBytes` keeps: one never flushes more than a quarter of it. */
export function edgeMaxEntryBytes(capacityBytes: number): number {
  return Math.max(1, Math.floor(capacityBytes / 4));
}

/**
 * The object store an edge keeps for `capacityBytes` under `policy`: EdgeCache's and the lab's
 * (lab/replay.ts) come from here, so experiments run the bounds the edge runs.
 */
export function createEdgeStore<V extends NonNullable<unknown>>(
  policy: CachePolicy,
  capacityBytes: number,
  onRemove?: ByteStoreOptions<V>['onRemove'],
): ByteStore<V> {
  return createByteStore<V>(policy, {
    maxBytes: capacityBytes,
    maxEntryBytes: edgeMaxEntryBytes(capacityBytes),
    ...(onRemove === undefined ? {} : { onRemove }),
  });
}

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

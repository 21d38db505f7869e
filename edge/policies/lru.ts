import { LRUCache } from 'lru-cache';
import { checkSize, resolveBudget } from './budget.ts';
import type { ByteStore, ByteStoreOptions, EvictReason } from './types.ts';

/**
 * Least-recently-used on `lru-cache` (the design's default policy). No TTL here: freshness is
 * EdgeCache's job. lru-cache reports clear() as 'delete' and a refused oversize set as 'set'
 * (it deletes what was there); clear() is relabelled here, the rest passes through.
 */
export class LruStore<V extends NonNullable<unknown>> implements ByteStore<V> {
  readonly policy = 'lru' as const;
  readonly maxBytes: number;
  private readonly cache: LRUCache<string, V>;
  private readonly maxEntryBytes: number;
  private clearing = false;
  /** Set while the store drops a value it puts straight back, so onRemove does not hear of it. */
  private quiet = false;
  // Shared option objects: lru-cache defaults a fresh `{}` per call otherwise, and get() is the
  // edge's per-request hit path. (lru-cache writes `status` into them; it stays undefined unless
  // something subscribes to its diagnostics channel.)
  private readonly getOpts: LRUCache.GetOptions<string, V, unknown> = {};
  private readonly peekOpts: LRUCache.PeekOptions<string, V, unknown> = {};
  private readonly hasOpts: LRUCache.HasOptions<string, V, unknown> = {};
  private readonly setOpts: LRUCache.SetOptions<string, V, unknown> = { size: 1 };

  constructor(opts: ByteStoreOptions<V>) {
    const budget = resolveBudget(opts);
    this.maxBytes = budget.maxBytes;
    this.maxEntryBytes = budget.maxEntryBytes;
    const onRemove = budget.onRemove;
    this.cache = new LRUCache<string, V>({
      maxSize: budget.maxBytes,
      maxEntrySize: budget.maxEntryBytes,
      ...(onRemove && {
        dispose: (value: V, key: string, reason: LRUCache.DisposeReason) => {
          if (this.quiet) return;
          onRemove(key, value, this.clearing ? 'clear' : toReason(reason));
        },
      }),
    });
  }

  get bytes(): number {
    return this.cache.calculatedSize;
  }

  get size(): number {
    return this.cache.size;
  }

  get(key: string): V | undefined {
    return this.cache.get(key, this.getOpts);
  }

  peek(key: string): V | undefined {
    return this.cache.peek(key, this.peekOpts);
  }

  has(key: string): boolean {
    return this.cache.has(key, this.hasOpts);
  }

  set(key: string, value: V, size: number): boolean {
    checkSize(size);
    const fits = size <= this.maxEntryBytes;
    // lru-cache keeps the old size when the same value is set again; drop it first so the new
    // size counts. The value does not leave, so this is not reported.
    if (fits && this.cache.peek(key, this.peekOpts) === value) {
      this.quiet = true;
      try {
        this.cache.delete(key);
      } finally {
        this.quiet = false;
      }
    }
    this.setOpts.size = size;
    this.cache.set(key, value, this.setOpts);
    return fits;
  }

  delete(key: string): boolean {
    return this.cache.delete(key);
  }

  keys(): IterableIterator<string> {
    return this.cache.keys();
  }

  clear(): void {
    this.clearing = true;
    try {
      this.cache.clear();
    } finally {
      this.clearing = false;
    }
  }
}

/** No TTL and no fetchMethod, so 'expire' and 'fetch' cannot happen; they would count as evictions. */
function toReason(reason: LRUCache.DisposeReason): EvictReason {
  return reason === 'set' || reason === 'delete' ? reason : 'evict';
}

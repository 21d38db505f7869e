import { checkSize } from './budget.ts';
import { Node, Queue } from './list.ts';
import { NodeStore } from './node-store.ts';
import type { ByteStore, ByteStoreOptions } from './types.ts';

/** S's share of the budget; M gets the rest. Both as in the paper and libCacheSim's default. */
const SMALL_SHARE = 0.1;
const MAX_FREQ = 3;
/**
 * An object leaves S for M when its tail turn finds freq > 1, i.e. hit at least twice while in S.
 * The paper's Algorithm 1 and libCacheSim's S3FIFO.c (move-to-main-threshold=2, freq counted
 * from 0 at insertion) agree on this; the paper's prose and blog say "accessed at least once",
 * which is threshold 1. We follow the code the paper's results came from.
 */
const MOVE_TO_MAIN = 2;

/**
 * S3-FIFO (Yang et al., SOSP'23, "FIFO queues are all you need for cache eviction"): new objects
 * enter a small FIFO S; at S's tail, an object hit often enough moves to the main FIFO M, the rest
 * leave and their keys go to a ghost FIFO G. A key found in G on insert goes straight to M. M is
 * a CLOCK with a 2-bit counter: at its tail an object with freq > 0 goes back to the head with
 * freq − 1, one with 0 is evicted.
 *
 * Bytes: the total budget is hard (never exceeded after set returns). The shares pick the queue
 * to evict from once the total is full — from M when M holds more than its 90%, or S is empty;
 * otherwise from S — so S can exceed 10% only while the cache still has free room (libCacheSim's
 * rule). G remembers the keys of objects evicted from S, bounded by their bytes to M's share
 * (libCacheSim's ghost-size-ratio 0.9 in bytes, rather than the paper's "as many entries as M",
 * which for equal sizes is the same and for mixed segment sizes tracks what M could hold).
 *
 * Deviations: no warm-up tweak (libCacheSim's newest S3FIFO.c inserts into M when S is full but the
 * cache has never evicted; we always insert into S, the paper's original). A replace keeps the
 * object's queue and freq and goes to that queue's head. delete() does not record a ghost.
 */
export class S3FifoStore<V> extends NodeStore<V> implements ByteStore<V> {
  readonly policy = 's3fifo' as const;
  private readonly mainMax: number;
  private readonly small = new Queue<V>();
  private readonly main = new Queue<V>();
  /** Key → size of the evicted object, oldest first (Map keeps insertion order). */
  private readonly ghost = new Map<string, number>();
  private ghostBytes = 0;

  constructor(opts: ByteStoreOptions<V>) {
    super(opts);
    this.mainMax = this.maxBytes - Math.floor(this.maxBytes * SMALL_SHARE);
  }

  get bytes(): number {
    return this.small.bytes + this.main.bytes;
  }

  /** Bytes in S, M and remembered by G: for tests and benches. */
  get queueBytes(): { small: number; main: number; ghost: number } {
    return { small: this.small.bytes, main: this.main.bytes, ghost: this.ghostBytes };
  }

  /** Which queue holds `key`, or 'ghost' for a remembered key: for tests. */
  where(key: string): 'small' | 'main' | 'ghost' | undefined {
    const n = this.map.get(key);
    if (n !== undefined) return n.inMain ? 'main' : 'small';
    return this.ghost.has(key) ? 'ghost' : undefined;
  }

  get(key: string): V | undefined {
    const n = this.map.get(key);
    if (n === undefined) return undefined;
    if (n.freq < MAX_FREQ) n.freq++;
    return n.value;
  }

  set(key: string, value: V, size: number): boolean {
    checkSize(size);
    const fits = size <= this.budget.maxEntryBytes;
    const old = this.map.get(key);
    let freq = 0;
    let toMain = false;
    if (old !== undefined) {
      freq = old.freq;
      toMain = old.inMain;
      // The same value set again (a resize) does not leave unless the set is refused.
      this.remove(old, old.value !== value || !fits ? 'set' : undefined);
    }
    if (!fits) return false;
    const g = old === undefined ? this.ghost.get(key) : undefined;
    if (g !== undefined) {
      this.ghost.delete(key);
      this.ghostBytes -= g;
      toMain = true;
    }
    while (this.bytes + size > this.maxBytes) this.evictOne();
    const n = new Node(key, value, size);
    n.freq = freq;
    n.inMain = toMain;
    (toMain ? this.main : this.small).pushHead(n);
    this.map.set(key, n);
    return true;
  }

  protected clearQueues(): void {
    this.small.clear();
    this.main.clear();
    this.ghost.clear();
    this.ghostBytes = 0;
  }

  private evictOne(): void {
    if (this.main.bytes > this.mainMax || this.small.length === 0) this.evictMain();
    else this.evictSmall();
  }

  /** Moves hot tail objects to M until one leaves for G, or S runs dry (then M evicts next). */
  private evictSmall(): void {
    for (let t = this.small.tail; t !== undefined; t = this.small.tail) {
      this.small.unlink(t);
      if (t.freq >= MOVE_TO_MAIN) {
        t.freq = 0;
        t.inMain = true;
        this.main.pushHead(t);
        continue;
      }
      this.map.delete(t.key);
      this.budget.onRemove?.(t.key, t.value, 'evict');
      this.remember(t.key, t.size);
      return;
    }
  }

  /** CLOCK over M; ends within MAX_FREQ laps since every pass decrements. */
  private evictMain(): void {
    for (let t = this.main.tail; t !== undefined; t = this.main.tail) {
      if (t.freq > 0) {
        this.main.unlink(t);
        t.freq--;
        this.main.pushHead(t);
        continue;
      }
      this.remove(t, 'evict');
      return;
    }
  }

  private remember(key: string, size: number): void {
    this.ghost.set(key, size);
    this.ghostBytes += size;
    while (this.ghostBytes > this.mainMax) {
      const oldest = this.ghost.keys().next();
      if (oldest.done) break;
      this.ghostBytes -= this.ghost.get(oldest.value) ?? 0;
      this.ghost.delete(oldest.value);
    }
  }

  protected unlink(n: Node<V>): void {
    (n.inMain ? this.main : this.small).unlink(n);
  }
}

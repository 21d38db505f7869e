import { checkSize } from './budget.ts';
import { Node, Queue } from './list.ts';
import { NodeStore } from './node-store.ts';
import type { ByteStore } from './types.ts';

/**
 * SIEVE (Zhang et al., NSDI'24, "SIEVE is Simpler than LRU"): one FIFO queue, a visited bit per
 * object and a hand. New objects go in at the head; a hit only sets the bit, so hits never move
 * nodes. To evict, the hand walks from where it stopped toward the head (wrapping to the tail),
 * clearing bits, and evicts the first unvisited object; it then rests on that object's newer
 * neighbour. Survivors keep their place, so a scan of new objects is what the hand meets first
 * next time: that is SIEVE's quick demotion of one-hit wonders.
 *
 * Byte-bounded: evicts until bytes + the new size fit. A replace is a fresh insert at the head
 * that keeps the visited bit (the object's hotness survives a revalidation).
 */
export class SieveStore<V> extends NodeStore<V> implements ByteStore<V> {
  readonly policy = 'sieve' as const;
  private readonly queue = new Queue<V>();
  private hand: Node<V> | undefined = undefined;

  get bytes(): number {
    return this.queue.bytes;
  }

  get(key: string): V | undefined {
    const n = this.map.get(key);
    if (n === undefined) return undefined;
    n.freq = 1;
    return n.value;
  }

  set(key: string, value: V, size: number): boolean {
    checkSize(size);
    const fits = size <= this.budget.maxEntryBytes;
    const old = this.map.get(key);
    let visited = 0;
    if (old !== undefined) {
      visited = old.freq;
      // The same value set again (a resize) does not leave unless the set is refused.
      this.remove(old, old.value !== value || !fits ? 'set' : undefined);
    }
    if (!fits) return false;
    while (this.queue.bytes + size > this.maxBytes) this.evictOne();
    const n = new Node(key, value, size);
    n.freq = visited;
    this.queue.pushHead(n);
    this.map.set(key, n);
    return true;
  }

  protected clearQueues(): void {
    this.queue.clear();
    this.hand = undefined;
  }

  private evictOne(): void {
    let n = this.hand ?? this.queue.tail;
    // The loop ends: each step clears a bit, so within one lap some object is unvisited.
    while (n !== undefined && n.freq !== 0) {
      n.freq = 0;
      n = n.newer ?? this.queue.tail;
    }
    if (n === undefined) throw new Error('sieve: nothing to evict under a full budget');
    this.hand = n; // remove() rests it on the victim's newer neighbour
    this.remove(n, 'evict');
  }

  protected unlink(n: Node<V>): void {
    if (this.hand === n) this.hand = n.newer;
    this.queue.unlink(n);
  }
}

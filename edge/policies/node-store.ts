import { resolveBudget, type Budget } from './budget.ts';
import type { Node } from './list.ts';
import type { ByteStoreOptions, CachePolicy, EvictReason } from './types.ts';

/**
 * What the linked-queue stores (SIEVE, S3-FIFO) share: the budget, the key → node map, and the
 * members that only read or drop nodes. A policy supplies its access rule (get), its insert and
 * eviction (set), how a node leaves its queue, and how its queues are emptied.
 */
export abstract class NodeStore<V> {
  abstract readonly policy: CachePolicy;
  readonly maxBytes: number;
  protected readonly budget: Budget<V>;
  protected readonly map = new Map<string, Node<V>>();

  constructor(opts: ByteStoreOptions<V>) {
    this.budget = resolveBudget(opts);
    this.maxBytes = this.budget.maxBytes;
  }

  get size(): number {
    return this.map.size;
  }

  peek(key: string): V | undefined {
    return this.map.get(key)?.value;
  }

  has(key: string): boolean {
    return this.map.has(key);
  }

  delete(key: string): boolean {
    const n = this.map.get(key);
    if (n === undefined) return false;
    this.remove(n, 'delete');
    return true;
  }

  keys(): IterableIterator<string> {
    return this.map.keys();
  }

  clear(): void {
    const nodes = [...this.map.values()];
    this.map.clear();
    this.clearQueues();
    const onRemove = this.budget.onRemove;
    if (onRemove) for (const n of nodes) onRemove(n.key, n.value, 'clear');
  }

  /** Empties the policy's queues (the map is already empty). */
  protected abstract clearQueues(): void;

  /** Unlinks `n` from its queue and the map, then reports; `reason` undefined when the same value stays under the key (no leave). */
  protected remove(n: Node<V>, reason: EvictReason | undefined): void {
    this.unlink(n);
    this.map.delete(n.key);
    if (reason !== undefined) this.budget.onRemove?.(n.key, n.value, reason);
  }

  /** Takes `n` out of whichever queue holds it. */
  protected abstract unlink(n: Node<V>): void;
}

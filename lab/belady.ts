/**
 * The offline reference: Belady's furthest-next-use rule made byte-aware. On a miss the object
 * is admitted only if it will be asked for again sooner than something held (else it bypasses
 * the cache, as an offline optimum may); room is then made by evicting the held objects whose
 * next request is furthest in the future (never first) until it fits.
 *
 * With equal sizes this is the optimum. With sizes it is an approximation: the exact byte-hit
 * optimum is NP-hard (it contains knapsack), and furthest-first may keep one big object where
 * several small ones would have paid more. It is still the usual upper-bound-like reference
 * (the gap an online policy has left to close), not a proof of one.
 */

export interface StreamStats {
  requests: number;
  hits: number;
  bytes: number;
  hitBytes: number;
}

/** Max-heap of (next use, key), stale entries skipped on pop (a key's live next use is in `held`). */
class FurthestHeap {
  private readonly at: number[] = [];
  private readonly key: number[] = [];

  get length(): number {
    return this.at.length;
  }

  push(nextUse: number, k: number): void {
    const { at, key } = this;
    let i = at.length;
    at.push(nextUse);
    key.push(k);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (at[p]! >= nextUse) break;
      at[i] = at[p]!;
      key[i] = key[p]!;
      i = p;
    }
    at[i] = nextUse;
    key[i] = k;
  }

  peekAt(): number {
    return this.at[0]!;
  }

  peekKey(): number {
    return this.key[0]!;
  }

  pop(): { nextUse: number; key: number } {
    const { at, key } = this;
    const top = { nextUse: at[0]!, key: key[0]! };
    const lastAt = at.pop()!;
    const lastKey = key.pop()!;
    const n = at.length;
    if (n > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= n) break;
        const r = l + 1;
        const c = r < n && at[r]! > at[l]! ? r : l;
        if (at[c]! <= lastAt) break;
        at[i] = at[c]!;
        key[i] = key[c]!;
        i = c;
      }
      at[i] = lastAt;
      key[i] = lastKey;
    }
    return top;
  }
}

/**
 * Replays one edge's request stream (key ids and sizes, in order) through the byte-aware
 * Belady rule with the given budget; objects above maxEntryBytes are never admitted (the same
 * rule the online stores apply).
 */
export function beladyStats(keys: readonly number[], sizes: readonly number[], maxBytes: number, maxEntryBytes = maxBytes / 4): StreamStats {
  const n = keys.length;
  const NEVER = Number.POSITIVE_INFINITY;
  const nextUse = new Array<number>(n);
  const seen = new Map<number, number>();
  for (let i = n - 1; i >= 0; i--) {
    nextUse[i] = seen.get(keys[i]!) ?? NEVER;
    seen.set(keys[i]!, i);
  }
  /** key → [its live next use, its size]. */
  const held = new Map<number, { next: number; size: number }>();
  const heap = new FurthestHeap();
  let used = 0;
  const out: StreamStats = { requests: 0, hits: 0, bytes: 0, hitBytes: 0 };
  const dropStale = () => {
    while (heap.length > 0) {
      const h = held.get(heap.peekKey());
      if (h && h.next === heap.peekAt()) return;
      heap.pop();
    }
  };
  for (let i = 0; i < n; i++) {
    const k = keys[i]!;
    const size = sizes[i]!;
    const next = nextUse[i]!;
    out.requests++;
    out.bytes += size;
    const h = held.get(k);
    if (h) {
      out.hits++;
      out.hitBytes += size;
      if (next === NEVER) {
        held.delete(k);
        used -= h.size;
      } else {
        h.next = next;
        heap.push(next, k);
      }
      continue;
    }
    if (next === NEVER || size > maxEntryBytes || size > maxBytes) continue;
    // Evict furthest-first while the victim is wanted later than the newcomer; if room cannot be made that way, bypass.
    let fits = used + size <= maxBytes;
    while (!fits) {
      dropStale();
      if (heap.length === 0 || heap.peekAt() <= next) break;
      const victim = heap.pop();
      const v = held.get(victim.key)!;
      held.delete(victim.key);
      used -= v.size;
      fits = used + size <= maxBytes;
    }
    if (!fits) continue;
    held.set(k, { next, size });
    heap.push(next, k);
    used += size;
  }
  return out;
}

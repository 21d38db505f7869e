import { createHash } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { ErrorCodes, OcdnError, isOcdnError } from '../common/errors.ts';
import { type Entry, type NegativeEntry, entrySize, makeObjectEntry } from './entry.ts';
import type { EdgeMetrics } from './metrics.ts';
import { contentTypeFor, isPlaylist, titleOf } from './path.ts';
import type { Upstream } from './upstream.ts';

export interface EdgeCacheOptions {
  capacityBytes: number;
  upstream: Upstream;
  metrics: EdgeMetrics;
  edgeId: string;
  /** RFC 9211 cache name, e.g. `ocdn-edge-1`. */
  cacheStatusName: string;
  playlistTtlMs: number;
  segmentTtlMs: number;
  negativeTtlMs: number;
  /** Cached 404s held at most (their own LRU: they never push objects out). */
  negativeMaxEntries?: number;
  /** How long past expiry a copy may still be served when upstream fails. */
  staleIfErrorMs: number;
  /** Hash every filled body and refuse it when it does not match the declared SHA-256. */
  verifyHash: boolean;
  /** Fields every hit carries whatever the request (the CORS policy's fixed ones), put in each entry's prebuilt hit headers. */
  hitHeaders?: Readonly<Record<string, string>>;
}

export type Outcome = 'HIT' | 'MISS' | 'COALESCED' | 'STALE';

export interface Lookup {
  entry: Entry;
  outcome: Outcome;
  /** This request's fetch put the entry in the cache (false when it was too large to keep). */
  stored: boolean;
  /** What the request forwarded for (RFC 9211 `fwd`): nothing held, or a stale/soft-purged copy. */
  fwd: 'miss' | 'stale';
  /** Why a STALE copy was served. */
  error?: OcdnError;
}

/** Freshness lifetime of an entry, kept beside it so stale-if-error can bound its window. */
const freshUntil = new WeakMap<Entry, number>();
const HEX64 = /^[0-9a-f]{64}$/;
/** Shared so the hit path's get() does not allocate an options object per call. */
const GET_OPTS: LRUCache.GetOptions<string, Entry, unknown> = {};
const NEG_GET_OPTS: LRUCache.GetOptions<string, NegativeEntry, unknown> = {};
/** Cached 404s held at most by default: ~0.5 MB of keys, whatever the capacity. */
export const DEFAULT_NEGATIVE_MAX_ENTRIES = 1_000;

/**
 * Byte-bounded LRU of whole objects in front of one upstream.
 *
 * - The hit path is `fresh(key)`: one synchronous `lru.get`, no promise.
 * - Misses go through `lru.fetch()`, whose fetchMethod runs once per key however many requests
 *   wait on it (coalescing); the waiters see `status.fetch === 'inflight'`.
 * - Expired entries stay in the cache (`noDeleteOnStaleGet`) until LRU pressure evicts them,
 *   and a failed refresh puts the old copy back (`noDeleteOnFetchRejection`), so a stale copy
 *   exists to serve when upstream fails (stale-if-error).
 * - A fetch whose placeholder is evicted or purged meanwhile still answers its waiters
 *   (`ignoreFetchAbort`); the result is just not stored.
 * - A 404 is stored as a small negative entry in an LRU of its own, bounded by count, with its own
 *   short TTL, dropped when it expires: random 404 paths can never evict objects, and an expired
 *   negative is not kept around (it has no stale-if-error use).
 */
export class EdgeCache {
  readonly capacityBytes: number;
  private readonly lru: LRUCache<string, Entry>;
  private readonly negatives: LRUCache<string, NegativeEntry>;
  private readonly opts: EdgeCacheOptions;

  constructor(opts: EdgeCacheOptions) {
    this.opts = opts;
    this.capacityBytes = opts.capacityBytes;
    this.lru = new LRUCache<string, Entry>({
      maxSize: opts.capacityBytes,
      // One object never flushes more than a quarter of the cache.
      maxEntrySize: Math.max(1, Math.floor(opts.capacityBytes / 4)),
      sizeCalculation: entrySize,
      ttl: opts.segmentTtlMs,
      // lru-cache re-reads the clock (and arms a timer) once per ttlResolution on the hit path;
      // 50 ms is far below any TTL we use.
      ttlResolution: 50,
      allowStale: false,
      noDeleteOnStaleGet: true,
      noDeleteOnFetchRejection: true,
      ignoreFetchAbort: true,
      fetchMethod: (key, _stale, { options }) => this.fill(key, options),
      dispose: (_value, _key, reason) => {
        if (reason === 'evict') opts.metrics.evictions.inc();
      },
    });
    this.negatives = new LRUCache<string, NegativeEntry>({
      max: Math.max(1, opts.negativeMaxEntries ?? DEFAULT_NEGATIVE_MAX_ENTRIES),
      ttl: Math.max(1, opts.negativeTtlMs),
      ttlResolution: 50,
      // One timer per negative, bounded by max: an expired 404 leaves on time even if no one asks again.
      ttlAutopurge: true,
    });
  }

  get bytes(): number {
    return this.lru.calculatedSize;
  }

  /** Entries held: objects and negative entries. */
  get items(): number {
    return this.lru.size + this.negatives.size;
  }

  /** Negative entries (cached 404s) held. */
  get negativeItems(): number {
    return this.negatives.size;
  }

  /** Hit path: the fresh entry for `key`, or undefined (absent, expired, soft-purged or being fetched). */
  fresh(key: string): Entry | undefined {
    const e = this.lru.get(key, GET_OPTS) ?? this.negatives.get(key, NEG_GET_OPTS);
    return e !== undefined && !e.softPurged ? e : undefined;
  }

  /** Whether a copy of `key` is held, fresh or not (tests, fill). */
  has(key: string): boolean {
    return this.lru.peek(key, { allowStale: true }) !== undefined || this.negatives.has(key);
  }

  /** Slow path: revalidate or fill `key`, coalesced with every other request for it. */
  async lookup(key: string): Promise<Lookup> {
    const held = this.lru.peek(key, { allowStale: true });
    const status: LRUCache.Status<string, Entry> = {};
    try {
      const entry = await this.lru.fetch(key, { status, allowStale: false, forceRefresh: held?.softPurged === true });
      const fwd = held === undefined ? 'miss' : 'stale';
      if (entry === undefined) {
        // A 404: fill() put it among the negatives. An object that 404s now is gone (lru-cache
        // puts the stale copy back when a fetch yields nothing).
        const missing = this.negatives.get(key);
        if (missing === undefined) throw new OcdnError(ErrorCodes.INTERNAL, `cache fill for ${key} returned nothing`);
        this.lru.delete(key);
        if (status.fetch === 'inflight') this.opts.metrics.coalesced.inc();
        return { entry: missing, outcome: status.fetch === 'inflight' ? 'COALESCED' : 'MISS', stored: true, fwd };
      }
      if (status.fetch === 'hit') return { entry, outcome: 'HIT', stored: false, fwd };
      if (status.fetch === 'inflight') {
        this.opts.metrics.coalesced.inc();
        return { entry, outcome: 'COALESCED', stored: false, fwd };
      }
      return { entry, outcome: 'MISS', stored: this.lru.peek(key, { allowStale: true }) === entry, fwd };
    } catch (raw) {
      const error = isOcdnError(raw)
        ? raw
        : new OcdnError(ErrorCodes.ORIGIN_UNAVAILABLE, `fill of ${key} failed: ${raw instanceof Error ? raw.message : String(raw)}`, { cause: raw });
      const stale = this.lru.peek(key, { allowStale: true });
      if (stale !== undefined && Date.now() - (freshUntil.get(stale) ?? 0) <= this.opts.staleIfErrorMs) {
        return { entry: stale, outcome: 'STALE', stored: false, fwd: 'stale', error };
      }
      throw error;
    }
  }

  /**
   * Hard purge drops every entry under `prefix`; soft purge keeps them as stale-if-error
   * copies but makes the next request revalidate. Returns how many entries matched.
   */
  purge(prefix: string, soft: boolean): number {
    let n = 0;
    // A negative has no stale use: soft or hard, it goes.
    for (const key of [...this.negatives.keys()]) {
      if (key.startsWith(prefix) && this.negatives.delete(key)) n++;
    }
    for (const [key] of this.lru.dump()) {
      if (!key.startsWith(prefix)) continue;
      if (soft) {
        const e = this.lru.peek(key, { allowStale: true });
        if (e === undefined) continue;
        e.softPurged = true;
      } else if (!this.lru.delete(key)) continue;
      n++;
    }
    return n;
  }

  /** Titles with at least one object held: the heartbeat's compact inventory. */
  titles(): string[] {
    const titles = new Set<string>();
    for (const [key, { value }] of this.lru.dump()) {
      // Not /catalog.json: it names no title.
      if (value.kind === 'object' && key.startsWith('/vod/')) titles.add(titleOf(key));
    }
    return [...titles].sort();
  }

  clear(): void {
    this.lru.clear();
    this.negatives.clear();
  }

  private async fill(key: string, options: LRUCache.FetcherFetchOptions<string, Entry>): Promise<Entry | undefined> {
    const { upstream, metrics } = this.opts;
    const stopTimer = metrics.originFetchSeconds.startTimer({ upstream: upstream.kind });
    let result = 'ok';
    try {
      const obj = await upstream.get(key);
      const declared = obj.sha256 !== undefined && HEX64.test(obj.sha256) ? obj.sha256 : undefined;
      let sha256 = declared;
      if (this.opts.verifyHash || declared === undefined) {
        const actual = createHash('sha256').update(obj.body).digest('hex');
        if (declared !== undefined && declared !== actual) {
          throw new OcdnError(
            ErrorCodes.ORIGIN_UNAVAILABLE,
            `content hash mismatch for ${key}: upstream declares ${declared.slice(0, 12)}…, body hashes to ${actual.slice(0, 12)}…`,
          );
        }
        sha256 = actual;
      }
      const ttl = isPlaylist(key) ? this.opts.playlistTtlMs : this.opts.segmentTtlMs;
      options.ttl = ttl;
      const entry = makeObjectEntry({
        key,
        body: obj.body,
        sha256: sha256!,
        contentType: contentTypeFor(key, obj.contentType),
        cacheControl: isPlaylist(key)
          ? `public, max-age=${Math.floor(ttl / 1000)}, stale-if-error=${Math.floor(this.opts.staleIfErrorMs / 1000)}`
          : `public, max-age=${Math.floor(ttl / 1000)}, immutable`,
        bornAt: Date.now() - obj.ageSec * 1000,
        edgeId: this.opts.edgeId,
        cacheStatusName: this.opts.cacheStatusName,
        headers: this.opts.hitHeaders,
        cmsd: obj.cmsd,
      });
      freshUntil.set(entry, Date.now() + ttl);
      metrics.originBytes += obj.body.length;
      return entry;
    } catch (err) {
      if (isOcdnError(err, ErrorCodes.NOT_FOUND)) {
        result = 'not_found';
        this.negatives.set(key, { kind: 'missing', key, bornAt: Date.now(), softPurged: false });
        return undefined;
      }
      result = isOcdnError(err, ErrorCodes.ORIGIN_TIMEOUT) ? 'timeout' : 'error';
      throw err;
    } finally {
      metrics.originFetches.inc({ upstream: upstream.kind, result });
      stopTimer();
    }
  }
}

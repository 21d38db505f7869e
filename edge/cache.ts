import { createHash } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import pLimit, { type LimitFunction } from 'p-limit';
import { Gauge } from 'prom-client';
import { ErrorCodes, OcdnError, isOcdnError } from '../common/errors.ts';
import { type Entry, type NegativeEntry, type ObjectEntry, entrySize, makeObjectEntry } from './entry.ts';
import type { DiskTier } from './disk-tier.ts';
import type { EdgeMetrics } from './metrics.ts';
import { type ByteStore, type CachePolicy, createByteStore, DEFAULT_CACHE_POLICY } from './policies/index.ts';
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
  /** Eviction policy of the object store (default lru, on lru-cache). */
  policy?: CachePolicy;
  /**
   * Upstream fetches in flight at most (default DEFAULT_UPSTREAM_CONCURRENCY). A fill holds its
   * whole body until stored, so this, times the largest object, bounds the memory misses take
   * however many distinct ones arrive at once; the rest wait their turn holding no body.
   */
  upstreamConcurrency?: number;
  /** Disk tier under the RAM one: every fill is written to it, and a RAM miss it holds is promoted from it. */
  disk?: DiskTier;
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
  /** A HIT the disk tier answered (promoted to RAM). */
  tier?: 'disk';
}

/** What the store holds per object: the entry and the end of its freshness lifetime. */
interface Held {
  entry: ObjectEntry;
  freshUntil: number;
}

/** A fill in progress; a hard purge marks it so its result answers its waiters but is not stored. */
interface Flight {
  promise: Promise<Entry | undefined>;
  purged: boolean;
  /** Set when the disk tier answered instead of upstream. */
  fromDisk?: boolean;
}

const HEX64 = /^[0-9a-f]{64}$/;
const NEG_GET_OPTS: LRUCache.GetOptions<string, NegativeEntry, unknown> = {};
/** Cached 404s held at most by default: ~0.5 MB of keys, whatever the capacity. */
export const DEFAULT_NEGATIVE_MAX_ENTRIES = 1_000;
export const DEFAULT_UPSTREAM_CONCURRENCY = 32;

/**
 * Byte-bounded cache of whole objects in front of one upstream, under one eviction policy
 * (edge/policies: LRU on lru-cache by default, SIEVE, S3-FIFO).
 *
 * - The hit path is `fresh(key)`: one synchronous store get and a clock compare, no promise.
 * - Misses go through `lookup()`; one fill runs per key however many requests wait on it
 *   (coalescing), and the waiters are told they joined.
 * - Freshness lives here, not in the store, so every policy has the same semantics: an expired
 *   entry stays until the policy evicts it, and a failed refresh leaves the old copy in place,
 *   so a stale copy exists to serve when upstream fails (stale-if-error).
 * - A fill whose key is purged meanwhile still answers its waiters; the result is just not stored.
 * - A 404 is stored as a small negative entry in an LRU of its own, bounded by count, with its own
 *   short TTL, dropped when it expires: random 404 paths can never evict objects, and an expired
 *   negative is not kept around (it has no stale-if-error use).
 */
export class EdgeCache {
  readonly capacityBytes: number;
  readonly policy: CachePolicy;
  private readonly store: ByteStore<Held>;
  private readonly negatives: LRUCache<string, NegativeEntry>;
  private readonly inflight = new Map<string, Flight>();
  private readonly upstreamSlots: LimitFunction;
  private readonly opts: EdgeCacheOptions;

  constructor(opts: EdgeCacheOptions) {
    this.opts = opts;
    this.capacityBytes = opts.capacityBytes;
    this.policy = opts.policy ?? DEFAULT_CACHE_POLICY;
    this.store = createByteStore<Held>(this.policy, {
      maxBytes: opts.capacityBytes,
      // One object never flushes more than a quarter of the cache.
      maxEntryBytes: Math.max(1, Math.floor(opts.capacityBytes / 4)),
      onRemove: (_key, _held, reason) => {
        if (reason === 'evict') opts.metrics.evictions.inc();
      },
    });
    const slots = pLimit(Math.max(1, opts.upstreamConcurrency ?? DEFAULT_UPSTREAM_CONCURRENCY));
    this.upstreamSlots = slots;
    new Gauge({
      name: 'ocdn_edge_upstream_waiting',
      help: 'Fills waiting for an upstream slot (the upstream concurrency cap is reached)',
      registers: [opts.metrics.registry],
      collect() {
        this.set(slots.pendingCount);
      },
    });
    new Gauge({
      name: 'ocdn_edge_upstream_active',
      help: 'Upstream fetches in flight',
      registers: [opts.metrics.registry],
      collect() {
        this.set(slots.activeCount);
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
    return this.store.bytes;
  }

  /** Entries held: objects and negative entries. */
  get items(): number {
    return this.store.size + this.negatives.size;
  }

  /** Negative entries (cached 404s) held. */
  get negativeItems(): number {
    return this.negatives.size;
  }

  /** Hit path: the fresh entry for `key`, or undefined (absent, expired, soft-purged or being fetched). */
  fresh(key: string): Entry | undefined {
    const held = this.store.get(key);
    if (held !== undefined) return !held.entry.softPurged && Date.now() <= held.freshUntil ? held.entry : undefined;
    const e = this.negatives.get(key, NEG_GET_OPTS);
    return e !== undefined && !e.softPurged ? e : undefined;
  }

  /** Whether a copy of `key` is held, fresh or not (tests, fill). */
  has(key: string): boolean {
    return this.store.has(key) || this.negatives.has(key);
  }

  /**
   * Slow path: revalidate or fill `key`, coalesced with every other request for it. `via` fills
   * from another source than the edge's own upstream (a peer holding the object, for a planned
   * fill); a request that finds a fill already running joins it whatever its source.
   */
  async lookup(key: string, via?: Upstream): Promise<Lookup> {
    const held = this.store.peek(key);
    if (held !== undefined && !held.entry.softPurged && Date.now() <= held.freshUntil) {
      this.store.get(key);
      return { entry: held.entry, outcome: 'HIT', stored: false, fwd: 'miss' };
    }
    const fwd = held === undefined ? 'miss' : 'stale';
    let flight = this.inflight.get(key);
    const joined = flight !== undefined;
    if (flight === undefined) {
      const f: Flight = { promise: Promise.resolve(undefined), purged: false };
      f.promise = this.fill(key, f, via ?? this.opts.upstream).finally(() => {
        if (this.inflight.get(key) === f) this.inflight.delete(key);
      });
      this.inflight.set(key, f);
      flight = f;
    }
    try {
      const entry = await flight.promise;
      if (flight.fromDisk && entry !== undefined) return { entry, outcome: 'HIT', stored: true, fwd, tier: 'disk' };
      if (joined) this.opts.metrics.coalesced.inc();
      if (entry === undefined) {
        // A 404: fill() put it among the negatives, and an object that 404s now is gone.
        const missing = this.negatives.get(key);
        if (missing === undefined) throw new OcdnError(ErrorCodes.INTERNAL, `cache fill for ${key} returned nothing`);
        return { entry: missing, outcome: joined ? 'COALESCED' : 'MISS', stored: true, fwd };
      }
      if (joined) return { entry, outcome: 'COALESCED', stored: false, fwd };
      return { entry, outcome: 'MISS', stored: this.store.peek(key)?.entry === entry, fwd };
    } catch (raw) {
      const error = isOcdnError(raw)
        ? raw
        : new OcdnError(ErrorCodes.ORIGIN_UNAVAILABLE, `fill of ${key} failed: ${raw instanceof Error ? raw.message : String(raw)}`, { cause: raw });
      const stale = this.store.peek(key);
      if (stale !== undefined && Date.now() - stale.freshUntil <= this.opts.staleIfErrorMs) {
        return { entry: stale.entry, outcome: 'STALE', stored: false, fwd: 'stale', error };
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
    if (!soft) {
      for (const [key, f] of this.inflight) if (key.startsWith(prefix)) f.purged = true;
    }
    const matched = new Set<string>();
    for (const key of [...this.store.keys()]) {
      if (!key.startsWith(prefix)) continue;
      if (soft) {
        const held = this.store.peek(key);
        if (held === undefined) continue;
        held.entry.softPurged = true;
      } else if (!this.store.delete(key)) continue;
      matched.add(key);
    }
    // Soft or hard, the disk copy goes: a soft-purged object must revalidate, and RAM keeps its stale copy.
    const disk = this.opts.disk;
    if (disk) for (const key of [...disk.keys()]) if (key.startsWith(prefix) && disk.delete(key)) matched.add(key);
    return n + matched.size;
  }

  /** Titles with at least one object held: the heartbeat's compact inventory. */
  titles(): string[] {
    const titles = new Set<string>();
    // Not /catalog.json: it names no title.
    for (const key of this.store.keys()) if (key.startsWith('/vod/')) titles.add(titleOf(key));
    if (this.opts.disk) for (const key of this.opts.disk.keys()) if (key.startsWith('/vod/')) titles.add(titleOf(key));
    return [...titles].sort();
  }

  clear(): void {
    this.store.clear();
    this.negatives.clear();
  }

  /** The disk tier's fresh copy of `key` as a RAM entry (stored in RAM), or undefined. */
  private async promote(key: string, flight: Flight): Promise<Entry | undefined> {
    const found = await this.opts.disk?.read(key);
    if (found === undefined || Date.now() > found.meta.freshUntil) return undefined;
    const { meta, body } = found;
    const entry = makeObjectEntry({
      key,
      body,
      sha256: meta.sha256,
      contentType: meta.contentType,
      cacheControl: meta.cacheControl,
      bornAt: meta.bornAt,
      edgeId: this.opts.edgeId,
      cacheStatusName: this.opts.cacheStatusName,
      headers: this.opts.hitHeaders,
      cmsd: { static: meta.cmsdStatic, dynamic: undefined },
    });
    if (!flight.purged) this.store.set(key, { entry, freshUntil: meta.freshUntil }, entrySize(entry));
    flight.fromDisk = true;
    return entry;
  }

  private async fill(key: string, flight: Flight, upstream: Upstream): Promise<Entry | undefined> {
    const fromDisk = await this.promote(key, flight);
    if (fromDisk !== undefined) return fromDisk;
    const { metrics } = this.opts;
    const stopTimer = metrics.originFetchSeconds.startTimer({ upstream: upstream.kind });
    let result = 'ok';
    try {
      const obj = await this.upstreamSlots(() => upstream.get(key));
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
      metrics.originBytes += obj.body.length;
      const freshUntil = Date.now() + ttl;
      // Too large for the store (over a quarter of it): it still answers this fill's waiters.
      if (!flight.purged) {
        this.store.set(key, { entry, freshUntil }, entrySize(entry));
        this.opts.disk?.write(
          {
            key,
            sha256: entry.sha256,
            contentType: entry.contentType,
            cacheControl: entry.cacheControl,
            bornAt: entry.bornAt,
            freshUntil,
            size: obj.body.length,
            ...(obj.cmsd.static === undefined ? {} : { cmsdStatic: obj.cmsd.static }),
          },
          obj.body,
        );
      }
      return entry;
    } catch (err) {
      if (isOcdnError(err, ErrorCodes.NOT_FOUND)) {
        result = 'not_found';
        this.negatives.set(key, { kind: 'missing', key, bornAt: Date.now(), softPurged: false });
        this.store.delete(key);
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

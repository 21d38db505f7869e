import { createHash } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { LRUCache } from 'lru-cache';
import pLimit, { type LimitFunction } from 'p-limit';
import { Gauge } from 'prom-client';
import type { AccessTier } from '../common/contracts.ts';
import { ErrorCodes, OcdnError, isOcdnError } from '../common/errors.ts';
import {
  ENTRY_OVERHEAD_BYTES,
  type Entry,
  type NegativeEntry,
  type ObjectEntry,
  type ObjectHead,
  entrySize,
  makeObjectEntry,
  makeObjectHead,
} from './entry.ts';
import type { DiskHeld, DiskMeta, DiskTier, DiskWrite } from './disk-tier.ts';
import { FillBody } from './fill.ts';
import type { EdgeMetrics } from './metrics.ts';
import { type ByteStore, type CachePolicy, createEdgeStore, DEFAULT_CACHE_POLICY, edgeMaxEntryBytes } from './policies/index.ts';
import { contentTypeFor, isPlaylist, titleOf } from './path.ts';
import type { ByteSpan } from './range.ts';
import type { Upstream } from './upstream.ts';
import { DEFAULT_UPSTREAM_CONCURRENCY } from './defaults.ts';

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
   * Upstream fetches in flight at most (default DEFAULT_UPSTREAM_CONCURRENCY). A fill holds at
   * most its body when it will be kept in RAM (a RAM store's largest entry), else a window
   * (edge/fill.ts), so this bounds the memory misses take however many distinct ones arrive at
   * once, and however many clients read them; the rest wait their turn holding nothing.
   */
  upstreamConcurrency?: number;
  /**
   * Bytes that fills in progress may hold to keep their bodies for RAM (default: the RAM store's
   * largest entry, a quarter of capacityBytes). A fill that finds it spent passes its body through
   * in a window and leaves it to the disk tier, so memory stays capacity + this + a window per
   * upstream slot, however many misses arrive.
   */
  keepBudgetBytes?: number;
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

/** Where a response's bytes came from: the access record's tier (common/contracts.ts). */
export type Tier = AccessTier;

/** A body written to a response as it is read, from a fill in progress or a disk file. */
export interface BodySource {
  /**
   * Writes the body (or `span` of it) to `res` and ends it once its bytes checked out; destroys
   * `res` when they do not (the client sees a body short of its Content-Length). Resolves true
   * when `res` was ended whole.
   */
  pipe(res: ServerResponse, span?: ByteSpan): Promise<boolean>;
  /** The response takes no body (HEAD, 304, 416): gives back what was held for it. */
  skip(): void;
}

/** How serve() answers: an entry whose body is in memory, or a head with a body to stream. */
export type Served =
  | { kind: 'entry'; lookup: Lookup; tier: Tier }
  | {
      kind: 'stream';
      head: ObjectHead;
      outcome: Outcome;
      /** The fill will keep it (RAM or disk), as far as known when its head came. */
      stored: boolean;
      fwd: 'miss' | 'stale';
      error?: OcdnError;
      tier: Tier;
      body: BodySource;
    };

/** What the store holds per object: the entry and the end of its freshness lifetime. */
interface Held {
  entry: ObjectEntry;
  freshUntil: number;
}

/** A fill whose head is in: what answers are built from, and its body as it comes. */
interface Streaming {
  head: ObjectHead;
  body: FillBody;
  stored: boolean;
}

/**
 * A fill in progress; a hard purge marks it so its result answers its waiters but is not stored.
 * `head` settles as soon as upstream answered (undefined: a 404); `done` once the body is in:
 * the entry when its body was kept, 'streamed' when it was only passed through.
 */
interface Flight {
  purged: boolean;
  head: Promise<Streaming | undefined>;
  done: Promise<ObjectEntry | 'streamed' | undefined>;
  tier: Tier;
}

const HEX64 = /^[0-9a-f]{64}$/;
const NEG_GET_OPTS: LRUCache.GetOptions<string, NegativeEntry, unknown> = {};
/** Cached 404s held at most by default: ~0.5 MB of keys, whatever the capacity. */
export const DEFAULT_NEGATIVE_MAX_ENTRIES = 1_000;

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
  /** The RAM store's largest entry: a fill of a body up to this (with overhead) keeps it whole. */
  private readonly maxEntryBytes: number;
  /** Disk hits' answer heads, built once per file. */
  private readonly diskHeads = new WeakMap<DiskHeld, ObjectHead>();
  private readonly keepBudget: number;
  /** Bytes kept by fills in progress, against keepBudget. */
  private keeping = 0;

  constructor(opts: EdgeCacheOptions) {
    this.opts = opts;
    this.capacityBytes = opts.capacityBytes;
    this.policy = opts.policy ?? DEFAULT_CACHE_POLICY;
    this.maxEntryBytes = edgeMaxEntryBytes(opts.capacityBytes);
    this.keepBudget = Math.max(this.maxEntryBytes, opts.keepBudgetBytes ?? this.maxEntryBytes);
    this.store = createEdgeStore<Held>(this.policy, opts.capacityBytes, (_key, _held, reason) => {
      if (reason === 'evict') opts.metrics.evictions.inc();
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
   * Slow path of a request: revalidate or fill `key`, coalesced with every other request for it,
   * answered as soon as upstream answers: the body streams to the client while it is stored. A
   * fresh disk copy is streamed from its file. `via` fills from another source than the edge's own
   * upstream; a request that finds a fill running joins it whatever its source. A `stream` answer's
   * body must be piped or skipped.
   */
  async serve(key: string, via?: Upstream, opts: { range?: boolean } = {}): Promise<Served> {
    for (;;) {
      const held = this.store.peek(key);
      if (held !== undefined && !held.entry.softPurged && Date.now() <= held.freshUntil) {
        this.store.get(key);
        return { kind: 'entry', lookup: { entry: held.entry, outcome: 'HIT', stored: false, fwd: 'miss' }, tier: 'ram' };
      }
      const fwd = held === undefined ? 'miss' : 'stale';
      let flight = this.inflight.get(key);
      const joined = flight !== undefined;
      if (flight === undefined) {
        const onDisk = this.diskFresh(key);
        if (onDisk !== undefined) {
          const keep = onDisk.meta.size + ENTRY_OVERHEAD_BYTES <= this.maxEntryBytes;
          // A range of an object RAM will not take reads just that range of its file.
          if (opts.range === true && !keep) return this.fromDisk(onDisk, 'HIT', fwd, false);
          // Otherwise one read of the file serves every request that comes while it is read.
          flight = this.startDiskRead(key, onDisk, keep);
        } else flight = this.startFill(key, via ?? this.opts.upstream, false);
      } else if (flight.tier === 'disk') this.opts.disk?.get(key);
      const hit = flight.tier === 'disk';
      let s: Streaming | undefined;
      try {
        s = await flight.head;
      } catch (raw) {
        return this.staleAnswer(key, raw);
      }
      if (s === undefined) {
        if (joined) this.opts.metrics.coalesced.inc();
        return { kind: 'entry', lookup: this.negativeLookup(key, joined, fwd), tier: flight.tier };
      }
      if (!joined || s.body.joinable) {
        if (joined && !hit) this.opts.metrics.coalesced.inc();
        const { body } = s;
        const cursor = body.reserve();
        return {
          kind: 'stream',
          head: s.head,
          outcome: hit ? 'HIT' : joined ? 'COALESCED' : 'MISS',
          stored: s.stored,
          fwd,
          tier: flight.tier,
          body: { pipe: (res, span) => body.pipe(res, cursor, span), skip: () => body.leave(cursor) },
        };
      }
      // Too late to join a body that is passed through, not kept: look again once it is over,
      // where it went (RAM, disk), or fill anew.
      await flight.done.catch(() => undefined);
    }
  }

  /**
   * `key` with its whole body, for in-process callers (admin fills, the catalog, planned fills):
   * revalidated or filled like serve(), coalesced with every request for it, resolved once the
   * body is in. An object too large for RAM is held whole for this caller only.
   */
  async lookup(key: string, via?: Upstream): Promise<Lookup> {
    for (;;) {
      const held = this.store.peek(key);
      if (held !== undefined && !held.entry.softPurged && Date.now() <= held.freshUntil) {
        this.store.get(key);
        return { entry: held.entry, outcome: 'HIT', stored: false, fwd: 'miss' };
      }
      const fwd = held === undefined ? 'miss' : 'stale';
      let flight = this.inflight.get(key);
      const joined = flight !== undefined;
      if (flight === undefined) {
        if (this.diskFresh(key) !== undefined) {
          const entry = await this.readDisk(key, true);
          if (entry !== undefined) return { entry, outcome: 'HIT', stored: true, fwd, tier: 'disk' };
          continue;
        }
        flight = this.startFill(key, via ?? this.opts.upstream, true);
      }
      try {
        const entry = await flight.done;
        if (entry === undefined) {
          if (joined) this.opts.metrics.coalesced.inc();
          return this.negativeLookup(key, joined, fwd);
        }
        // Joined a fill that passed its body through: look again where it went.
        if (entry === 'streamed') continue;
        if (flight.tier === 'disk') return { entry, outcome: 'HIT', stored: true, fwd, tier: 'disk' };
        if (joined) this.opts.metrics.coalesced.inc();
        if (joined) return { entry, outcome: 'COALESCED', stored: false, fwd };
        return { entry, outcome: 'MISS', stored: this.store.peek(key)?.entry === entry, fwd };
      } catch (raw) {
        const error = asFillError(key, raw);
        const stale = this.store.peek(key);
        if (stale !== undefined && Date.now() - stale.freshUntil <= this.opts.staleIfErrorMs) {
          return { entry: stale.entry, outcome: 'STALE', stored: false, fwd: 'stale', error };
        }
        if (this.diskStale(key) !== undefined) {
          const entry = await this.readDisk(key, false);
          if (entry !== undefined) return { entry, outcome: 'STALE', stored: false, fwd: 'stale', error, tier: 'disk' };
        }
        throw error;
      }
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

  private negativeLookup(key: string, joined: boolean, fwd: 'miss' | 'stale'): Lookup {
    // A 404: the fill put it among the negatives, and an object that 404s now is gone.
    const missing = this.negatives.get(key);
    if (missing === undefined) throw new OcdnError(ErrorCodes.INTERNAL, `cache fill for ${key} returned nothing`);
    return { entry: missing, outcome: joined ? 'COALESCED' : 'MISS', stored: true, fwd };
  }

  /** Upstream failed before a byte was sent: a stale copy within stale-if-error, from RAM, else from disk. */
  private staleAnswer(key: string, raw: unknown): Served {
    const error = asFillError(key, raw);
    const stale = this.store.peek(key);
    if (stale !== undefined && Date.now() - stale.freshUntil <= this.opts.staleIfErrorMs) {
      return { kind: 'entry', lookup: { entry: stale.entry, outcome: 'STALE', stored: false, fwd: 'stale', error }, tier: 'ram' };
    }
    const onDisk = this.diskStale(key);
    if (onDisk !== undefined) return { ...this.fromDisk(onDisk, 'STALE', 'stale', false), error };
    throw error;
  }

  private diskFresh(key: string): DiskHeld | undefined {
    const held = this.opts.disk?.peek(key);
    return held !== undefined && Date.now() <= held.meta.freshUntil ? held : undefined;
  }

  private diskStale(key: string): DiskHeld | undefined {
    const held = this.opts.disk?.peek(key);
    return held !== undefined && Date.now() - held.meta.freshUntil <= this.opts.staleIfErrorMs ? held : undefined;
  }

  /** A disk copy streamed from its file; one that fits RAM is promoted once read whole and checked. */
  private fromDisk(held: DiskHeld, outcome: 'HIT' | 'STALE', fwd: 'miss' | 'stale', promote = true): Served & { kind: 'stream' } {
    const disk = this.opts.disk!;
    disk.get(held.meta.key);
    const head = this.diskHead(held);
    const keep = promote && held.meta.size + ENTRY_OVERHEAD_BYTES <= this.maxEntryBytes;
    return {
      kind: 'stream',
      head,
      outcome,
      stored: false,
      fwd,
      tier: 'disk',
      body: {
        pipe: async (res, span) => {
          const r = await disk.pipe(res, held, span, keep);
          if (r.body !== undefined) this.promote(held.meta, r.body);
          return r.ok;
        },
        skip: () => undefined,
      },
    };
  }

  /** The disk copy of `key` read whole and checked; promoted to RAM when fresh and `promote`. */
  private async readDisk(key: string, promote: boolean): Promise<ObjectEntry | undefined> {
    const found = await this.opts.disk?.read(key);
    if (found === undefined) return undefined;
    return promote ? this.promote(found.meta, found.body) : makeObjectEntry({ ...this.headArgs(found.meta), body: found.body, sha256: found.meta.sha256 });
  }

  private promote(meta: DiskMeta, body: Buffer): ObjectEntry {
    const entry = makeObjectEntry({ ...this.headArgs(meta), body, sha256: meta.sha256 });
    const now = this.store.peek(meta.key);
    // A fill may have put a fresher copy there meanwhile; a purge may have taken the disk copy.
    if ((now === undefined || now.freshUntil < meta.freshUntil) && this.opts.disk?.has(meta.key)) {
      this.store.set(meta.key, { entry, freshUntil: meta.freshUntil }, entrySize(entry));
    }
    return entry;
  }

  private headArgs(meta: DiskMeta) {
    return {
      key: meta.key,
      contentType: meta.contentType,
      cacheControl: meta.cacheControl,
      bornAt: meta.bornAt,
      edgeId: this.opts.edgeId,
      cacheStatusName: this.opts.cacheStatusName,
      headers: this.opts.hitHeaders,
      cmsd: { static: meta.cmsdStatic, dynamic: undefined },
    };
  }

  /** A read of `held`'s file that every request coming meanwhile joins; promoted when kept and it checks out. */
  private startDiskRead(key: string, held: DiskHeld, keep: boolean): Flight {
    const disk = this.opts.disk!;
    disk.get(key);
    const body = new FillBody(keep, undefined, held.meta.size);
    const streaming: Streaming = { head: this.diskHead(held), body, stored: false };
    const f: Flight = { purged: false, head: Promise.resolve(streaming), done: Promise.resolve(undefined), tier: 'disk' };
    f.done = (async () => {
      // Every request waiting takes its place at byte 0 before the first chunk.
      await new Promise((r) => setImmediate(r));
      const ok = await disk.produce(held, body);
      if (!ok || !keep) return 'streamed' as const;
      const whole = body.whole();
      return f.purged ? makeObjectEntry({ ...this.headArgs(held.meta), body: whole, sha256: held.meta.sha256 }) : this.promote(held.meta, whole);
    })().finally(() => {
      if (this.inflight.get(key) === f) this.inflight.delete(key);
    });
    f.done.catch(() => undefined);
    this.inflight.set(key, f);
    return f;
  }

  private diskHead(held: DiskHeld): ObjectHead {
    let head = this.diskHeads.get(held);
    if (head === undefined) {
      head = makeObjectHead({ ...this.headArgs(held.meta), size: held.meta.size, sha256: held.meta.sha256 });
      this.diskHeads.set(held, head);
    }
    return head;
  }

  private startFill(key: string, upstream: Upstream, keepWhole: boolean): Flight {
    let headed: ((s: Streaming | undefined) => void) | undefined;
    let failed: ((err: unknown) => void) | undefined;
    const f: Flight = {
      purged: false,
      head: new Promise<Streaming | undefined>((resolve, reject) => {
        headed = resolve;
        failed = reject;
      }),
      done: Promise.resolve(undefined),
      tier: upstream.kind === 's3' ? 'origin' : 'shield',
    };
    f.done = this.fill(key, f, upstream, keepWhole, (s) => headed!(s))
      .then(
        (r) => {
          // A 404 has no head: it answers here.
          if (r === undefined) headed!(undefined);
          return r;
        },
        (err: unknown) => {
          failed!(err);
          throw err;
        },
      )
      .finally(() => {
        if (this.inflight.get(key) === f) this.inflight.delete(key);
      });
    // Nobody may be waiting on one or the other.
    f.head.catch(() => undefined);
    f.done.catch(() => undefined);
    this.inflight.set(key, f);
    return f;
  }

  /**
   * One upstream fetch, its slot held until the body is in. The body goes, chunk by chunk, to the
   * hash, to the disk write, to the readers (edge/fill.ts: held whole only when it will be kept
   * in RAM); reading waits for the slowest of them, so nothing piles up. Only a body that arrived
   * whole and hashed right is stored; any other fails its readers' responses.
   */
  private async fill(
    key: string,
    flight: Flight,
    upstream: Upstream,
    keepWhole: boolean,
    onHead: (s: Streaming) => void,
  ): Promise<ObjectEntry | 'streamed' | undefined> {
    const { metrics } = this.opts;
    const stopTimer = metrics.originFetchSeconds.startTimer({ upstream: upstream.kind });
    let result = 'ok';
    // Counted once the body is in, before the disk write finishes (the answers are over by then).
    let counted = false;
    const count = () => {
      if (counted) return;
      counted = true;
      metrics.originFetches.inc({ upstream: upstream.kind, result });
      stopTimer();
    };
    try {
      return await this.upstreamSlots(async () => {
        const obj = await upstream.get(key);
        let uncharge = () => {};
        let body: FillBody | undefined;
        let writer: DiskWrite | undefined;
        try {
          const declared = obj.sha256 !== undefined && HEX64.test(obj.sha256) ? obj.sha256 : undefined;
          const ttl = isPlaylist(key) ? this.opts.playlistTtlMs : this.opts.segmentTtlMs;
          const args = {
            key,
            contentType: contentTypeFor(key, obj.contentType),
            cacheControl: isPlaylist(key)
              ? `public, max-age=${Math.floor(ttl / 1000)}, stale-if-error=${Math.floor(this.opts.staleIfErrorMs / 1000)}`
              : `public, max-age=${Math.floor(ttl / 1000)}, immutable`,
            bornAt: Date.now() - obj.ageSec * 1000,
            edgeId: this.opts.edgeId,
            cacheStatusName: this.opts.cacheStatusName,
            headers: this.opts.hitHeaders,
            cmsd: obj.cmsd,
          };
          const size = obj.size;
          const fitsRam = (n: number) => n + ENTRY_OVERHEAD_BYTES <= this.maxEntryBytes;
          // A body is kept for RAM when it fits there and the keep budget has room for it (its
          // whole size when known; else it is charged as it grows and dropped past the budget).
          let charged = 0;
          const charge = (n: number): boolean => {
            if (!keepWhole && this.keeping + n - charged > this.keepBudget) return false;
            this.keeping += n - charged;
            charged = n;
            return true;
          };
          uncharge = () => {
            this.keeping -= charged;
            charged = 0;
          };
          const keep = keepWhole || (size === undefined ? charge(0) : fitsRam(size) && charge(size));
          body = new FillBody(keep, undefined, size);
          const disk = this.opts.disk;
          const sameOnDisk = disk?.holds(key, declared) === true;
          if (disk !== undefined && !sameOnDisk && !flight.purged) {
            writer = disk.writer({
              key,
              sha256: declared ?? '',
              contentType: args.contentType,
              cacheControl: args.cacheControl,
              bornAt: args.bornAt,
              freshUntil: 0,
              size: size ?? 0,
              ...(obj.cmsd.static === undefined ? {} : { cmsdStatic: obj.cmsd.static }),
            });
          }
          const streaming: Streaming = {
            head: makeObjectHead({ ...args, size, sha256: declared }),
            body,
            stored: !flight.purged && ((size !== undefined && keep && fitsRam(size)) || writer !== undefined || sameOnDisk),
          };
          onHead(streaming);
          // Every request waiting on the head takes its place at byte 0 before the first chunk.
          await new Promise((r) => setImmediate(r));
          const hash = this.opts.verifyHash || declared === undefined ? createHash('sha256') : undefined;
          for await (const chunk of obj.body as AsyncIterable<Buffer>) {
            hash?.update(chunk);
            body.push(chunk);
            if (size !== undefined && body.received > size) throw new Error(`body longer than its Content-Length ${size}`);
            if (body.keeping && !keepWhole && (!fitsRam(body.received) || (size === undefined && !charge(body.received)))) {
              body.stopKeeping();
              uncharge();
            }
            if (writer !== undefined && (flight.purged || !writer.write(chunk))) {
              void writer.abort();
              writer = undefined;
            }
            await body.room();
            if (writer !== undefined) await writer.ready();
          }
          if (size !== undefined && body.received !== size) throw new Error(`body ended at ${body.received} of its ${size} bytes`);
          const actual = hash?.digest('hex');
          if (declared !== undefined && actual !== undefined && declared !== actual) {
            throw new OcdnError(
              ErrorCodes.ORIGIN_UNAVAILABLE,
              `content hash mismatch for ${key}: upstream declares ${declared.slice(0, 12)}…, body hashes to ${actual.slice(0, 12)}…`,
            );
          }
          const sha256 = (actual ?? declared)!;
          metrics.originBytes += body.received;
          const freshUntil = Date.now() + ttl;
          const entry = body.keeping ? makeObjectEntry({ ...args, body: body.whole(), sha256 }) : undefined;
          // Readers end their responses now; the disk write finishes after.
          body.end();
          count();
          uncharge();
          if (flight.purged) {
            await writer?.abort();
            return entry ?? 'streamed';
          }
          // Too large for the store (over a quarter of it): the disk tier, if any, holds it.
          if (entry !== undefined && fitsRam(entry.size)) this.store.set(key, { entry, freshUntil }, entrySize(entry));
          if (sameOnDisk) disk!.refresh(key, sha256, freshUntil, args.bornAt);
          await writer?.commit({ sha256, size: body.received, freshUntil });
          return entry ?? 'streamed';
        } catch (raw) {
          const err = isOcdnError(raw)
            ? raw
            : new OcdnError(ErrorCodes.ORIGIN_UNAVAILABLE, `fill of ${key} broke off: ${raw instanceof Error ? raw.message : String(raw)}`, { cause: raw });
          body?.fail(err);
          obj.body.destroy();
          await writer?.abort();
          throw err;
        } finally {
          uncharge();
        }
      });
    } catch (err) {
      if (isOcdnError(err, ErrorCodes.NOT_FOUND)) {
        result = 'not_found';
        this.negatives.set(key, { kind: 'missing', key, bornAt: Date.now(), softPurged: false });
        this.store.delete(key);
        this.opts.disk?.delete(key);
        return undefined;
      }
      result = isOcdnError(err, ErrorCodes.ORIGIN_TIMEOUT) ? 'timeout' : 'error';
      throw err;
    } finally {
      count();
    }
  }
}

function asFillError(key: string, raw: unknown): OcdnError {
  return isOcdnError(raw)
    ? raw
    : new OcdnError(ErrorCodes.ORIGIN_UNAVAILABLE, `fill of ${key} failed: ${raw instanceof Error ? raw.message : String(raw)}`, { cause: raw });
}

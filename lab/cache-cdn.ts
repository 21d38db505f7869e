import type { ByteStore } from '../edge/policies/types.ts';
import type { Clock } from '../player-sim/clock.ts';
import { VirtualCdn, type VirtualCdnOptions, type VirtualResponse } from '../player-sim/virtual.ts';

const SEGMENT = /\/seg-\d+\.(ts|m4s)$/;

/** What one edge saw during a replay. */
export interface EdgeTally {
  id: string;
  requests: number;
  hits: number;
  bytes: number;
  hitBytes: number;
  originBytes: number;
  /** Segment requests and bytes served per whole virtual second since the run's start. */
  requestsPerSecond: Map<number, number>;
  bytesPerSecond: Map<number, number>;
  /** The request stream, for the offline (Belady) bound: interned key ids and sizes. */
  keys: number[];
  sizes: number[];
}

/**
 * The virtual CDN with a real eviction store per edge in front of segment requests: a get()
 * that finds the segment is a HIT; otherwise the edge fetches it whole from the origin (its
 * bytes count as origin bytes) and set()s it. VirtualTransport then adds the miss penalty
 * (missPenaltyMs, the edge→origin round trip) to the TTFB of a MISS. Playlists keep the
 * virtual CDN's remember-forever behaviour and are not counted: they are a few hundred bytes
 * an edge keeps pinned, and would only dilute the segment figures.
 */
export class CachingVirtualCdn extends VirtualCdn {
  readonly tallies = new Map<string, EdgeTally>();
  private readonly keyIds = new Map<string, number>();

  constructor(
    opts: VirtualCdnOptions,
    private readonly stores: ReadonlyMap<string, ByteStore<number>>,
    private readonly clock: Clock,
  ) {
    super(opts);
    for (const e of this.edges)
      this.tallies.set(e.id, {
        id: e.id,
        requests: 0,
        hits: 0,
        bytes: 0,
        hitBytes: 0,
        originBytes: 0,
        requestsPerSecond: new Map(),
        bytesPerSecond: new Map(),
        keys: [],
        sizes: [],
      });
  }

  override respond(edgeId: string, path: string, range: { offset: number; length: number } | undefined): VirtualResponse {
    const res = super.respond(edgeId, path, undefined);
    const store = this.stores.get(edgeId);
    const tally = this.tallies.get(edgeId);
    if (res.status !== 200 || !SEGMENT.test(path) || !store || !tally) return range ? super.respond(edgeId, path, range) : res;
    const size = res.bytes;
    const hit = store.get(path) !== undefined;
    if (!hit) {
      tally.originBytes += size;
      store.set(path, size, size);
    }
    tally.requests++;
    tally.bytes += size;
    if (hit) {
      tally.hits++;
      tally.hitBytes += size;
    }
    const sec = Math.floor(this.clock.now() / 1000);
    tally.requestsPerSecond.set(sec, (tally.requestsPerSecond.get(sec) ?? 0) + 1);
    tally.bytesPerSecond.set(sec, (tally.bytesPerSecond.get(sec) ?? 0) + size);
    let id = this.keyIds.get(path);
    if (id === undefined) {
      id = this.keyIds.size;
      this.keyIds.set(path, id);
    }
    tally.keys.push(id);
    tally.sizes.push(size);
    const out = range ? super.respond(edgeId, path, range) : res;
    return { ...out, headers: { ...out.headers, 'x-cache': hit ? 'HIT' : 'MISS' } };
  }
}

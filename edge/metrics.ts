import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { createRegistry } from '../common/metrics.ts';

export type CacheLabel = 'HIT' | 'MISS' | 'STALE' | 'COALESCED' | 'NONE';
export type UpstreamKind = 's3' | 'parent' | 'peer';

const CACHE_LABELS: readonly CacheLabel[] = ['HIT', 'MISS', 'STALE', 'COALESCED', 'NONE'];

/**
 * The edge's Prometheus metrics, exactly the `ocdn_edge_*` names of DESIGN.md, in a registry
 * of its own so several edges can share a process. Per-request counts are plain numbers bumped
 * on the hit path and copied into prom-client only when /metrics is scraped: a labelled
 * `Counter.inc` hashes its labels on every call, which the hit path cannot afford.
 */
export class EdgeMetrics {
  readonly registry: Registry;
  /** Requests since start, per X-Cache value and status code. */
  private readonly requests = new Map<CacheLabel, Map<number, number>>(CACHE_LABELS.map((c) => [c, new Map()]));
  requestCount = 0;
  readonly originFetches: Counter<'upstream' | 'result'>;
  /** Body bytes fetched from upstream: with bytes served, the cluster's offload in bytes. */
  originBytes = 0;
  readonly originFetchSeconds: Histogram<'upstream'>;
  readonly coalesced: Counter;
  readonly evictions: Counter;

  private readonly bytesWritten: () => number;

  constructor(opts: {
    edgeId: string;
    cacheStats: () => { bytes: number; items: number; negativeItems: number };
    /** Bytes the kernel took from this edge's client sockets (common/http-server.ts). */
    bytesWritten: () => number;
    defaultMetrics?: boolean;
  }) {
    this.bytesWritten = opts.bytesWritten;
    this.registry = createRegistry({ labels: { edge: opts.edgeId }, defaultMetrics: opts.defaultMetrics ?? false });
    const registers = [this.registry];
    const requests = this.requests;
    new Counter({
      name: 'ocdn_edge_requests_total',
      help: 'Requests answered, by X-Cache outcome (NONE = refused before the cache) and HTTP status.',
      labelNames: ['cache', 'status'],
      registers,
      collect() {
        this.reset();
        for (const [cache, byStatus] of requests) {
          for (const [status, n] of byStatus) this.inc({ cache, status: String(status) }, n);
        }
      },
    });
    const self = this;
    new Counter({
      name: 'ocdn_edge_bytes_served_total',
      help: 'Bytes written to client sockets (heads and bodies) that the kernel took: an aborted response counts what left, not its length.',
      registers,
      collect() {
        this.reset();
        this.inc(self.bytesWritten());
      },
    });
    new Counter({
      name: 'ocdn_edge_origin_bytes_total',
      help: 'Body bytes fetched from upstream (S3 or parent edge) to fill the cache.',
      registers,
      collect() {
        this.reset();
        this.inc(self.originBytes);
      },
    });
    this.originFetches = new Counter({
      name: 'ocdn_edge_origin_fetches_total',
      help: 'Upstream GETs (S3 or parent edge) made to fill the cache, by result.',
      labelNames: ['upstream', 'result'],
      registers,
    });
    this.originFetchSeconds = new Histogram({
      name: 'ocdn_edge_origin_fetch_seconds',
      help: 'Duration of upstream GETs.',
      labelNames: ['upstream'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.coalesced = new Counter({
      name: 'ocdn_edge_coalesced_total',
      help: "Requests that waited on another request's upstream fetch instead of making their own.",
      registers,
    });
    new Gauge({
      name: 'ocdn_edge_cache_bytes',
      help: 'Bytes held by the cache (bodies plus per-entry overhead), never above the capacity.',
      registers,
      collect() {
        this.set(opts.cacheStats().bytes);
      },
    });
    new Gauge({
      name: 'ocdn_edge_cache_items',
      help: 'Entries in the cache (objects and negative entries).',
      registers,
      collect() {
        this.set(opts.cacheStats().items);
      },
    });
    new Gauge({
      name: 'ocdn_edge_cache_negative_items',
      help: 'Cached 404s, held apart from objects and capped so they never push objects out.',
      registers,
      collect() {
        this.set(opts.cacheStats().negativeItems);
      },
    });
    this.evictions = new Counter({
      name: 'ocdn_edge_cache_evictions_total',
      help: 'Entries evicted to make room (LRU), not counting purges or replacements.',
      registers,
    });
  }

  /** Bytes written to clients so far (the heartbeat's egress rate). */
  get bytesServed(): number {
    return this.bytesWritten();
  }

  /**
   * Hit path: two map operations and an addition. Status 499 is a request whose client left
   * before its answer was ready (nginx's code). Bytes are counted from the sockets, not here.
   */
  count(cache: CacheLabel, status: number): void {
    const byStatus = this.requests.get(cache)!;
    byStatus.set(status, (byStatus.get(status) ?? 0) + 1);
    this.requestCount++;
  }
}

import type autocannon from 'autocannon';
import type { Catalog, SteerResponse } from '../common/contracts.ts';
import { contentKeys } from '../common/contracts.ts';
import { ErrorCodes, OcdnError } from '../common/errors.ts';
import { readMetric } from '../common/metrics.ts';
import { mulberry32, Zipf } from '../common/zipf.ts';

export interface LoadtestOptions {
  target: 'edge' | 'steering' | 'cluster';
  connections: number;
  durationSec: number;
  zipf: number;
  seed: number;
  catalog: Catalog;
  steeringUrl: string;
  /** Edges to drive (target edge: the first one). */
  edges: { id: string; url: string }[];
  /** Steering policy the URL mix is placed with (cluster target). */
  policy?: string;
  /** autocannon worker threads per target (its own ceiling is one core per process). */
  workers?: number;
  /** How many distinct request paths to draw per edge. */
  mixSize?: number;
  progress?: boolean;
}

export interface LoadtestResult {
  target: string;
  requests: number;
  durationSec: number;
  reqPerSec: number;
  bytesPerSec: number;
  latencyP50Ms: number;
  latencyP99Ms: number;
  errors: number;
  non2xx: number;
  edgeHitRatio?: number;
  originFetches?: number;
  /** Bytes the edges fetched from upstream / bytes they served (DESIGN.md's offload figure). */
  originByteShare?: number;
  perEdge: { id: string; requests: number; hits: number; originFetches: number; bytesServed: number; originBytes: number }[];
}

async function text(url: string): Promise<string> {
  const res = await fetch(url, { signal: AbortSignal.timeout(5_000) });
  if (!res.ok) throw new OcdnError(ErrorCodes.INTERNAL, `${url} → HTTP ${res.status}: ${(await res.text()).slice(0, 200)}`);
  return res.text();
}

interface EdgeCounters {
  requests: number;
  hits: number;
  originFetches: number;
  bytesServed: number;
  originBytes: number;
}

async function edgeCounters(url: string): Promise<EdgeCounters> {
  const m = await text(`${url}/metrics`);
  return {
    requests: readMetric(m, 'ocdn_edge_requests_total'),
    hits: readMetric(m, 'ocdn_edge_requests_total', { cache: 'HIT' }),
    originFetches: readMetric(m, 'ocdn_edge_origin_fetches_total'),
    bytesServed: readMetric(m, 'ocdn_edge_bytes_served_total'),
    originBytes: readMetric(m, 'ocdn_edge_origin_bytes_total'),
  };
}

/**
 * Segment paths drawn by Zipf popularity over the catalog, each signed by asking steering for
 * that title (so the load test exercises the same tokens players get). Returns, per edge, the
 * list of signed paths to cycle through.
 */
async function buildMix(o: LoadtestOptions): Promise<Map<string, string[]>> {
  const rand = mulberry32(o.seed);
  // Imported titles name their segments as their packager chose: the keys below are ours only.
  const titles = [...o.catalog.titles].filter((t) => t.mode !== 'import').sort((a, b) => a.popularityRank - b.popularityRank);
  if (titles.length === 0) throw new Error('no seeded titles to load-test (imported titles are not drawn): run ocdn content seed');
  const zipf = new Zipf(titles.length, o.zipf);
  const tokens = new Map<string, SteerResponse>();
  const mix = new Map<string, string[]>(o.edges.map((e) => [e.id, []]));
  const n = o.mixSize ?? 2_000;
  for (let i = 0; i < n; i++) {
    const t = titles[zipf.rank(rand()) - 1]!;
    // Per-title policies answer the same for every request of a title; the others (random,
    // round-robin, least-loaded) must be asked per request or the mix would pin titles anyway.
    const perTitle = ['hash', 'hrw-bounded'].includes(o.policy ?? 'hrw-bounded');
    let steer = perTitle ? tokens.get(t.id) : undefined;
    if (!steer) {
      steer = JSON.parse(
        await text(`${o.steeringUrl}/v1/steer?title=${encodeURIComponent(t.id)}&policy=${encodeURIComponent(o.policy ?? 'hrw-bounded')}`),
      ) as SteerResponse;
      tokens.set(t.id, steer);
    }
    const rendition = t.renditions[Math.floor(rand() * t.renditions.length)]!;
    const seg = Math.floor(rand() * t.segments);
    const key = contentKeys.segment(t.id, rendition.name, seg, t.container === 'fmp4' ? 'm4s' : 'ts');
    // Target "cluster" sends each title where steering puts it; "edge" sends all to one edge.
    const chosen = o.target === 'edge' ? (steer.edges.find((e) => e.id === o.edges[0]!.id) ?? steer.edges[0]!) : steer.edges[0]!;
    // The segment resolved against the signed master URL, as a player resolves it: the path
    // token (common/token.ts) comes along; the edge's origin is the target's, not part of the mix.
    const edgeId = o.target === 'edge' ? o.edges[0]!.id : chosen.id;
    const master = new URL(chosen.url);
    const signed = new URL(key.slice(`vod/${t.id}/`.length), master);
    mix.get(edgeId)?.push(signed.pathname + signed.search);
  }
  return mix;
}

/**
 * The request mix for autocannon. In one process a hook draws each path; worker threads cannot
 * be handed a function, so with workers each connection cycles through a fixed list drawn
 * the same way up front.
 */
function requestsFor(paths: string[], rand: () => number, workers: number | undefined): Pick<autocannon.Options, 'requests' | 'workers'> {
  if (!workers || workers <= 1) return { requests: [{ method: 'GET', setupRequest: (req) => ({ ...req, path: paths[Math.floor(rand() * paths.length)]! }) }] };
  const list = Array.from({ length: Math.max(paths.length, 1_000) }, () => ({ method: 'GET' as const, path: paths[Math.floor(rand() * paths.length)]! }));
  return { requests: list, workers };
}

async function runCannon(opts: autocannon.Options, progress: boolean): Promise<autocannon.Result> {
  // Loaded when a load test runs: the CLI that registers the command need not pay for it.
  const { default: autocannon } = await import('autocannon');
  return new Promise((resolve, reject) => {
    const inst = autocannon(opts, (err, result) => (err ? reject(err) : resolve(result)));
    if (progress) autocannon.track(inst, { renderProgressBar: process.stderr.isTTY, renderResultsTable: false, renderLatencyTable: false });
  });
}

export async function runLoadtest(o: LoadtestOptions): Promise<LoadtestResult> {
  if (o.edges.length === 0) throw new OcdnError(ErrorCodes.NO_EDGE, 'no edges to load-test');
  if (o.target === 'steering') {
    const titles = o.catalog.titles.map((t) => t.id);
    let i = 0;
    const r = await runCannon(
      {
        url: o.steeringUrl,
        connections: o.connections,
        duration: o.durationSec,
        ...requestsFor(
          titles.map((t) => `/v1/steer?title=${t}`),
          () => (i++ % titles.length) / titles.length,
          o.workers,
        ),
      },
      o.progress ?? false,
    );
    return toResult('steering', r, []);
  }
  const before = new Map<string, EdgeCounters>();
  for (const e of o.edges) before.set(e.id, await edgeCounters(e.url));
  const mix = await buildMix(o);
  const active = o.edges.filter((e) => (mix.get(e.id)?.length ?? 0) > 0);
  const total = [...mix.values()].reduce((s, l) => s + l.length, 0);
  const results = await Promise.all(
    active.map((e, idx) => {
      const paths = mix.get(e.id)!;
      const rand = mulberry32(o.seed + idx + 1);
      return runCannon(
        {
          url: e.url,
          connections: Math.max(1, Math.round((o.connections * paths.length) / total)),
          duration: o.durationSec,
          ...requestsFor(paths, rand, o.workers),
        },
        (o.progress ?? false) && idx === 0,
      );
    }),
  );
  const perEdge = [];
  for (const e of o.edges) {
    const a = before.get(e.id)!;
    const b = await edgeCounters(e.url);
    perEdge.push({
      id: e.id,
      requests: b.requests - a.requests,
      hits: b.hits - a.hits,
      originFetches: b.originFetches - a.originFetches,
      bytesServed: b.bytesServed - a.bytesServed,
      originBytes: b.originBytes - a.originBytes,
    });
  }
  return toResult(o.target, merge(results), perEdge);
}

function merge(rs: autocannon.Result[]): autocannon.Result {
  if (rs.length === 1) return rs[0]!;
  const first = rs[0]!;
  return {
    ...first,
    requests: { ...first.requests, total: rs.reduce((s, r) => s + r.requests.total, 0), average: rs.reduce((s, r) => s + r.requests.average, 0) },
    throughput: { ...first.throughput, average: rs.reduce((s, r) => s + r.throughput.average, 0) },
    // The slowest edge sets the cluster's tail.
    latency: { ...first.latency, p50: Math.max(...rs.map((r) => r.latency.p50)), p99: Math.max(...rs.map((r) => r.latency.p99)) },
    errors: rs.reduce((s, r) => s + r.errors, 0),
    non2xx: rs.reduce((s, r) => s + r.non2xx, 0),
  };
}

const ratioOf = (n: number, d: number) => (d > 0 ? n / d : 0);

function toResult(target: string, r: autocannon.Result, perEdge: LoadtestResult['perEdge']): LoadtestResult {
  const reqs = perEdge.reduce((s, e) => s + e.requests, 0);
  const hits = perEdge.reduce((s, e) => s + e.hits, 0);
  return {
    target,
    requests: r.requests.total,
    durationSec: r.duration,
    reqPerSec: r.requests.average,
    bytesPerSec: r.throughput.average,
    latencyP50Ms: r.latency.p50,
    latencyP99Ms: r.latency.p99,
    errors: r.errors,
    non2xx: r.non2xx,
    edgeHitRatio: perEdge.length ? (reqs > 0 ? hits / reqs : 0) : undefined,
    originFetches: perEdge.length ? perEdge.reduce((s, e) => s + e.originFetches, 0) : undefined,
    originByteShare: perEdge.length
      ? ratioOf(
          perEdge.reduce((s, e) => s + e.originBytes, 0),
          perEdge.reduce((s, e) => s + e.bytesServed, 0),
        )
      : undefined,
    perEdge,
  };
}

import type { CachePolicy } from '../edge/policies/types.ts';
import type { AbrName } from '../player-sim/abr/index.ts';
import type { PolicyName } from '../steering/policies.ts';
import { beladyStats, type StreamStats } from './belady.ts';
import type { EdgeTally } from './cache-cdn.ts';
import { replay, type ReplayResult } from './replay.ts';
import { buildWorkload, type WorkloadOptions } from './workload.ts';

export interface LabParams extends WorkloadOptions {
  policies: CachePolicy[];
  /** Per-edge cache size as a fraction of the catalog's bytes. */
  capacities: number[];
  steering: PolicyName[];
  abr: AbrName[];
  network: string;
  rttMs: number;
  originRttMs: number;
}

export interface EdgeRow {
  id: string;
  region: string;
  requests: number;
  servedBytes: number;
  byteHitRatio: number;
  objectHitRatio: number;
  originBytesRatio: number;
  /** Segment requests in the edge's busiest virtual second, and on average over the run. */
  peakLoadRps: number;
  meanLoadRps: number;
}

export interface LabRow {
  steering: PolicyName;
  cachePolicy: CachePolicy | 'belady';
  capacityFraction: number;
  capacityBytes: number;
  abr: AbrName;
  byteHitRatio: number;
  objectHitRatio: number;
  originBytesRatio: number;
  requests: number;
  servedBytes: number;
  originBytes: number;
  /** Busiest edge's busiest second, and the mean over edges of each edge's mean, requests/s. */
  peakLoadRps: number;
  meanLoadRps: number;
  /** Requests of the busiest edge over the mean per edge (1 = perfectly even). */
  loadImbalance: number;
  /** Players' QoE (player-sim's summary, telemetry/qoe-math.ts definitions); null for the offline belady rows. */
  vstP95Ms: number | null;
  rebufferRatio: number | null;
  avgBitrate: number | null;
  sessions: number;
  /** Virtual time the replay covered, first arrival to last session end. */
  simulatedMs: number;
  /** belady rows: the online policy whose request stream the bound was computed on. */
  streamOf?: CachePolicy;
  /**
   * Online rows: the belady bound's byte hit ratio on this row's own request stream. Streams of
   * different policies differ through timing (a miss lasts longer, so ABR and arrivals shift),
   * so this, not the belady row, is the bound each policy is held to.
   */
  beladyByteHitRatio?: number;
  perEdge: EdgeRow[];
}

export interface LabResult {
  params: LabParams & { catalogBytes: number };
  rows: LabRow[];
}

/** Fixed decimals, so the same run prints the same digits. */
function fixed(x: number, digits: number): number {
  return Number(x.toFixed(digits));
}
const ratio = (num: number, den: number) => (den > 0 ? fixed(num / den, 6) : 0);

interface Loads {
  peak: number;
  mean: number;
}

function loadsOf(t: EdgeTally, simulatedMs: number): Loads {
  let peak = 0;
  for (const n of t.requestsPerSecond.values()) peak = Math.max(peak, n);
  return { peak, mean: simulatedMs > 0 ? fixed(t.requests / (simulatedMs / 1000), 3) : 0 };
}

function edgeRow(id: string, region: string, s: StreamStats, originBytes: number, loads: Loads): EdgeRow {
  return {
    id,
    region,
    requests: s.requests,
    servedBytes: s.bytes,
    byteHitRatio: ratio(s.hitBytes, s.bytes),
    objectHitRatio: ratio(s.hits, s.requests),
    originBytesRatio: ratio(originBytes, s.bytes),
    peakLoadRps: loads.peak,
    meanLoadRps: loads.mean,
  };
}

function clusterFigures(edges: EdgeRow[], hits: number, hitBytes: number, originBytes: number) {
  const requests = edges.reduce((a, e) => a + e.requests, 0);
  const servedBytes = edges.reduce((a, e) => a + e.servedBytes, 0);
  const meanRequests = edges.length > 0 ? requests / edges.length : 0;
  return {
    byteHitRatio: ratio(hitBytes, servedBytes),
    objectHitRatio: ratio(hits, requests),
    originBytesRatio: ratio(originBytes, servedBytes),
    requests,
    servedBytes,
    originBytes,
    peakLoadRps: Math.max(0, ...edges.map((e) => e.peakLoadRps)),
    meanLoadRps: edges.length > 0 ? fixed(edges.reduce((a, e) => a + e.meanLoadRps, 0) / edges.length, 3) : 0,
    loadImbalance: meanRequests > 0 ? fixed(Math.max(...edges.map((e) => e.requests)) / meanRequests, 4) : 0,
  };
}

/** What names a row: the combination. */
type RowKey = Pick<LabRow, 'steering' | 'cachePolicy' | 'capacityFraction' | 'capacityBytes' | 'abr' | 'streamOf'>;

function onlineRow(key: RowKey, r: ReplayResult, regions: Map<string, string>): LabRow {
  const perEdge = r.edges.map((t) =>
    edgeRow(t.id, regions.get(t.id)!, { requests: t.requests, hits: t.hits, bytes: t.bytes, hitBytes: t.hitBytes }, t.originBytes, loadsOf(t, r.simulatedMs)),
  );
  const hits = r.edges.reduce((a, t) => a + t.hits, 0);
  const hitBytes = r.edges.reduce((a, t) => a + t.hitBytes, 0);
  const origin = r.edges.reduce((a, t) => a + t.originBytes, 0);
  const s = r.summary;
  const bound = beladyTotals(r, key.capacityBytes);
  return {
    ...key,
    ...clusterFigures(perEdge, hits, hitBytes, origin),
    beladyByteHitRatio: ratio(bound.hitBytes, bound.bytes),
    vstP95Ms: s.vstP95Ms,
    rebufferRatio: s.rebufferRatio === null ? null : fixed(s.rebufferRatio, 6),
    avgBitrate: Math.round(s.avgBitrate),
    sessions: s.sessions,
    simulatedMs: Math.round(r.simulatedMs),
    perEdge,
  };
}

/** The belady bound summed over one replay's per-edge streams. */
function beladyTotals(r: ReplayResult, capacityBytes: number): { bytes: number; hitBytes: number } {
  let bytes = 0;
  let hitBytes = 0;
  for (const t of r.edges) {
    const b = beladyStats(t.keys, t.sizes, capacityBytes);
    bytes += b.bytes;
    hitBytes += b.hitBytes;
  }
  return { bytes, hitBytes };
}

/** The offline bound on one replay's per-edge streams (origin bytes = the misses it could not avoid). */
function beladyRow(key: RowKey, r: ReplayResult, regions: Map<string, string>): LabRow {
  let hits = 0;
  let hitBytes = 0;
  let origin = 0;
  const perEdge = r.edges.map((t) => {
    const s = beladyStats(t.keys, t.sizes, key.capacityBytes);
    hits += s.hits;
    hitBytes += s.hitBytes;
    origin += s.bytes - s.hitBytes;
    return edgeRow(t.id, regions.get(t.id)!, s, s.bytes - s.hitBytes, loadsOf(t, r.simulatedMs));
  });
  return {
    ...key,
    ...clusterFigures(perEdge, hits, hitBytes, origin),
    vstP95Ms: null,
    rebufferRatio: null,
    avgBitrate: null,
    sessions: r.summary.sessions,
    simulatedMs: Math.round(r.simulatedMs),
    perEdge,
  };
}

/**
 * Every combination of steering × abr × capacity × cache policy, replayed on one workload, plus
 * a belady row per steering × abr × capacity computed on the LRU replay's streams (or the first
 * policy's when lru is not among them): streams differ between policies only through timing.
 */
export async function runLab(p: LabParams, onProgress?: (done: number, total: number) => void): Promise<LabResult> {
  const w = buildWorkload(p);
  const regions = new Map(w.edges.map((e) => [e.id, e.region]));
  const rows: LabRow[] = [];
  const total = p.steering.length * p.abr.length * p.capacities.length * p.policies.length;
  let done = 0;
  for (const steering of p.steering)
    for (const abr of p.abr)
      for (const capacityFraction of p.capacities) {
        const capacityBytes = Math.floor(w.catalogBytes * capacityFraction);
        let streamSource: { policy: CachePolicy; r: ReplayResult } | undefined;
        for (const cachePolicy of p.policies) {
          const r = await replay(w, { steering, cachePolicy, capacityBytes, abr, network: p.network, rttMs: p.rttMs, originRttMs: p.originRttMs });
          rows.push(onlineRow({ steering, cachePolicy, capacityFraction, capacityBytes, abr }, r, regions));
          if (!streamSource || cachePolicy === 'lru') streamSource = { policy: cachePolicy, r };
          onProgress?.(++done, total);
        }
        if (streamSource)
          rows.push(
            beladyRow({ steering, cachePolicy: 'belady', capacityFraction, capacityBytes, abr, streamOf: streamSource.policy }, streamSource.r, regions),
          );
      }
  return { params: { ...p, catalogBytes: w.catalogBytes }, rows };
}

/**
 * The per-window, per-dimension aggregate: only sums, counts and a mergeable sketch, so partials
 * from different partitions (and aggregator instances) merge exactly, and ratios are computed
 * from the merged sums at read time (Σrebuffer / Σ(play + rebuffer), never an average of ratios).
 */
import type { QoeMetrics } from '../common/contracts.ts';
import type { QoeEvent } from './events.ts';
import { rebufferRatio, vstQuantileMs } from './qoe-math.ts';
import { decodeSketch, encodeSketch, newSketch, type Sketch } from './sketch.ts';

export const DIMENSIONS = ['all', 'edge', 'title', 'region', 'isp', 'device', 'abr'] as const;
export type Dimension = (typeof DIMENSIONS)[number];

/** The value of each dimension for an event ('*' for all). */
export function dimensionValues(e: QoeEvent): string[] {
  return ['*', e.edgeId, e.title, e.region, e.isp, e.device, e.abr];
}

export interface Agg {
  events: number; // valid, on-time, first-seen events
  duplicates: number; // same event id seen again in the window: dropped
  late: number; // arrived after the window closed: counted here, not merged into the metrics
  sessionStarts: number;
  startups: number;
  vstSumMs: number;
  vst: Sketch; // video start time, ms
  sessionEnds: number;
  startFailures: number; // ended without starting because of an error
  exitsBeforeStart: number; // viewer left before the first frame
  errorExits: number; // started sessions ended by an error
  playS: number; // Σ session_end.playedS
  stallS: number; // Σ session_end.stalledS
  bitrateSeconds: number; // Σ avgBitrate × playedS (time-weighted average bitrate)
  endSwitches: number; // Σ session_end.switches
  endBytes: number; // Σ session_end.bytes: what the players say they downloaded
  stalls: number; // stall_start events
  stallMs: number; // Σ stall_end.stallMs
  switches: number; // switch events
  errors: number;
  fatalErrors: number;
  failovers: number;
  heartbeats: number;
  segments: number;
  cacheHits: number; // HIT or STALE: served from the edge's cache
  cacheKnown: number; // segments whose cache status is known
  segmentBytes: number;
  ttfbSumMs: number;
  // Miss classification (telemetry/miss-join.ts): bytes of edge access records per class, and
  // the accesses that could not be classified (no decision for their session, or late).
  localHitBytes: number;
  contentMissBytes: number;
  healthMissBytes: number;
  otherMissBytes: number;
  unmatchedAccesses: number;
  unmatchedAccessBytes: number;
  lateAccesses: number;
  minTs: number;
  maxTs: number;
}

export const COUNTER_KEYS = [
  'events',
  'duplicates',
  'late',
  'sessionStarts',
  'startups',
  'vstSumMs',
  'sessionEnds',
  'startFailures',
  'exitsBeforeStart',
  'errorExits',
  'playS',
  'stallS',
  'bitrateSeconds',
  'endSwitches',
  'endBytes',
  'stalls',
  'stallMs',
  'switches',
  'errors',
  'fatalErrors',
  'failovers',
  'heartbeats',
  'segments',
  'cacheHits',
  'cacheKnown',
  'segmentBytes',
  'ttfbSumMs',
  'localHitBytes',
  'contentMissBytes',
  'healthMissBytes',
  'otherMissBytes',
  'unmatchedAccesses',
  'unmatchedAccessBytes',
  'lateAccesses',
] as const satisfies readonly (keyof Agg)[];
type CounterKey = (typeof COUNTER_KEYS)[number];

export function emptyAgg(): Agg {
  const a = { vst: newSketch(), minTs: Number.POSITIVE_INFINITY, maxTs: Number.NEGATIVE_INFINITY } as Agg;
  for (const k of COUNTER_KEYS) a[k] = 0;
  return a;
}

/** Adds one (valid, deduplicated, on-time) event. */
export function applyEvent(a: Agg, e: QoeEvent): void {
  a.events++;
  if (e.ts < a.minTs) a.minTs = e.ts;
  if (e.ts > a.maxTs) a.maxTs = e.ts;
  switch (e.type) {
    case 'session_start':
      a.sessionStarts++;
      break;
    case 'startup':
      a.startups++;
      a.vstSumMs += e.vstMs;
      a.vst.accept(e.vstMs);
      break;
    case 'segment':
      a.segments++;
      a.segmentBytes += e.bytes;
      a.ttfbSumMs += e.ttfbMs;
      if (e.cacheStatus !== 'UNKNOWN') a.cacheKnown++;
      if (e.cacheStatus === 'HIT' || e.cacheStatus === 'STALE') a.cacheHits++;
      break;
    case 'switch':
      a.switches++;
      break;
    case 'stall_start':
      a.stalls++;
      break;
    case 'stall_end':
      a.stallMs += e.stallMs;
      break;
    case 'error':
      a.errors++;
      if (e.fatal) a.fatalErrors++;
      break;
    case 'failover':
      a.failovers++;
      break;
    case 'heartbeat':
      a.heartbeats++;
      break;
    case 'session_end':
      a.sessionEnds++;
      if (!e.started) {
        if (e.exitReason === 'start-failure' || e.exitReason === 'error') a.startFailures++;
        else a.exitsBeforeStart++;
      } else if (e.exitReason === 'error') a.errorExits++;
      a.playS += e.playedS;
      a.stallS += e.stalledS;
      a.bitrateSeconds += e.avgBitrate * e.playedS;
      a.endSwitches += e.switches;
      a.endBytes += e.bytes;
      break;
  }
}

export function mergeInto(target: Agg, src: Agg): Agg {
  for (const k of COUNTER_KEYS) target[k] += src[k];
  if (src.vst.count > 0) target.vst.merge(src.vst);
  if (src.minTs < target.minTs) target.minTs = src.minTs;
  if (src.maxTs > target.maxTs) target.maxTs = src.maxTs;
  return target;
}

/** JSON form of an Agg (sketch as base64 protobuf). */
export type AggJson = Partial<Record<CounterKey, number>> & { vst?: string; minTs?: number; maxTs?: number };

export function aggToJson(a: Agg): AggJson {
  const out: AggJson = {};
  for (const k of COUNTER_KEYS) if (a[k] !== 0) out[k] = a[k];
  const vst = encodeSketch(a.vst);
  if (vst) out.vst = vst;
  if (Number.isFinite(a.minTs)) out.minTs = a.minTs;
  if (Number.isFinite(a.maxTs)) out.maxTs = a.maxTs;
  return out;
}

export function aggFromJson(j: AggJson): Agg {
  const a = emptyAgg();
  for (const k of COUNTER_KEYS) {
    const v = j[k];
    if (typeof v === 'number' && Number.isFinite(v)) a[k] = v;
  }
  a.vst = decodeSketch(j.vst);
  if (typeof j.minTs === 'number') a.minTs = j.minTs;
  if (typeof j.maxTs === 'number') a.maxTs = j.maxTs;
  return a;
}

/** What the API and CLI show for a (merged) aggregate: the /v1/qoe contract's metrics. */
export type { QoeMetrics };

const ratio = (n: number, d: number): number | null => (d > 0 ? n / d : null);

export function metricsOf(a: Agg): QoeMetrics {
  const playMin = a.playS / 60;
  return {
    events: a.events,
    sessions: a.sessionStarts,
    sessionEnds: a.sessionEnds,
    vstP50Ms: vstQuantileMs(a.vst, 0.5),
    vstP95Ms: vstQuantileMs(a.vst, 0.95),
    vstP99Ms: vstQuantileMs(a.vst, 0.99),
    vstMeanMs: ratio(a.vstSumMs, a.startups),
    startups: a.startups,
    startFailures: a.startFailures,
    startFailureRate: ratio(a.startFailures, a.sessionEnds),
    exitsBeforeStart: a.exitsBeforeStart,
    ebvsRate: ratio(a.exitsBeforeStart, a.sessionEnds),
    playS: a.playS,
    stallS: a.stallS,
    rebufferRatio: rebufferRatio(a.stallS, a.playS),
    stalls: a.stalls,
    stallsPerMin: ratio(a.stalls, playMin),
    avgBitrate: ratio(a.bitrateSeconds, a.playS),
    switches: a.switches,
    switchesPerMin: ratio(a.endSwitches, playMin),
    errors: a.errors,
    fatalErrors: a.fatalErrors,
    errorRate: ratio(a.errorExits + a.startFailures, a.sessionEnds),
    failovers: a.failovers,
    segments: a.segments,
    cacheHitRatio: ratio(a.cacheHits, a.cacheKnown),
    segmentBytes: a.segmentBytes,
    sessionBytes: a.endBytes,
    ttfbMeanMs: ratio(a.ttfbSumMs, a.segments),
    duplicates: a.duplicates,
    late: a.late,
    localHitBytes: a.localHitBytes,
    contentMissBytes: a.contentMissBytes,
    healthMissBytes: a.healthMissBytes,
    otherMissBytes: a.otherMissBytes,
    unmatchedAccesses: a.unmatchedAccesses,
    unmatchedAccessBytes: a.unmatchedAccessBytes,
    lateAccesses: a.lateAccesses,
  };
}

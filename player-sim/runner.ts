import { randomUUID } from 'node:crypto';
import type { Dispatcher } from 'undici';
import { ErrorCodes, OcdnError } from '../common/errors.ts';
import { Zipf } from '../common/zipf.ts';
import type { EventSink, QoeEvent } from '../telemetry/events.ts';
import { rebufferRatio, vstQuantileMs, vstSketch } from '../telemetry/qoe-math.ts';
import { createAbr, type AbrName } from './abr/index.ts';
import { RealClock, type Clock } from './clock.ts';
import type { CmcdMode } from './cmcd.ts';
import { NullSink } from './sinks.ts';
import { parseTraceSpec, type TraceFactory } from './network.ts';
import { geometric, rngFor, uuidFrom } from './rng.ts';
import { startSession, type EdgeUsage, type ExitReason, type SessionConfig, type SessionHandle, type SessionResult } from './session.ts';
import { SteeringClient, StaticEdges, type EdgeSource } from './steer.ts';
import { TokenBucket } from './throttle.ts';
import { createPlayerAgent, HttpTransport } from './transport-http.ts';
import type { Transport } from './transport.ts';
import { VirtualCdn, VirtualClock, VirtualSteering, VirtualTransport, type VirtualCdnOptions } from './virtual.ts';

export interface RunPlayersOptions {
  /** Concurrent sessions to hold (default 100). */
  players?: number;
  /** Sessions start evenly spread over this, session ms (default 10 s). */
  rampMs?: number;
  /** Length of the run, session ms (default 60 s); sessions still playing then end 'aborted'. */
  durationMs?: number;
  /** Start a new session when one ends, until the run is over (default true). */
  loop?: boolean;
  /** Hard cap on sessions started, loop or not. */
  maxSessions?: number;
  abr?: AbrName;
  /** --network spec (default const:5mbps). */
  network?: string;
  rttMs?: number;
  /** Session time per real time in real mode (default 1). */
  speed?: number;
  /** zipf:<s>, uniform, or a comma-separated list of title ids (default zipf:0.9). */
  titles?: string;
  /** Title ids by popularity rank (rank 1 first) for zipf/uniform draws in real mode. */
  catalog?: string[];
  steering?: string;
  edges?: string[];
  sink?: EventSink;
  seed?: number;
  virtual?: boolean;
  /** Virtual mode's in-memory CDN (titles, edges, faults, playlist overrides). */
  virtualCdn?: VirtualCdnOptions | VirtualCdn;
  cmcd?: CmcdMode;
  /** The ABR also heeds the edges' CMSD-Dynamic etp and du (player-sim/abr/cmsd-hint.ts). */
  abrCmsd?: boolean;
  /** Mean watch time, seconds (geometric drop-off); 'full' = to the end (default 120). */
  watchMeanS?: number | 'full';
  startThresholdS?: number;
  resumeThresholdS?: number;
  maxBufferS?: number;
  startTimeoutMs?: number;
  requestTimeoutMs?: number;
  giveUpMs?: number;
  heartbeatMs?: number;
  /** Client region sent to steering; a comma-separated list spreads sessions over them in turn. */
  region?: string;
  isps?: string[];
  devices?: string[];
  recordSegments?: boolean;
  /** Real mode: shared undici dispatcher (default: one Agent for the run). */
  agent?: Dispatcher;
  /** Token bucket depth in ms of the current rate (real mode). */
  burstMs?: number;
  /** Aborts the run: every session ends 'aborted'. */
  signal?: AbortSignal;
  onEvent?: (e: QoeEvent) => void;
  onSessionEnd?: (r: SessionResult) => void;
  /** Wraps each session's transport (tests: watch requests; fault injection). */
  wrapTransport?: (t: Transport, sessionIndex: number) => Transport;
  /** Reads file: traces (tests). */
  readFile?: (path: string) => string;
}

export interface EdgeSummary extends EdgeUsage {
  id: string;
  /** Segments answered with X-Cache: HIT / segments. */
  hitRatio: number;
  byteHitRatio: number;
}

/** Sessions of one title that steering refused with one status and code, and its (latest) reason. */
export interface RefusedTitle {
  title: string;
  status: number;
  code: string;
  reason: string;
  sessions: number;
}

export interface RunSummary {
  mode: 'virtual' | 'real';
  abr: AbrName;
  network: string;
  seed: number;
  players: number;
  sessions: number;
  started: number;
  startFailures: number;
  errors: number;
  /** Sessions that ended because steering refused them (also counted in startFailures or errors). */
  refusedSessions: number;
  /** Those sessions by title, status and code: most refused first. */
  refused: RefusedTitle[];
  exitReasons: Record<ExitReason, number>;
  /** Of the sessions' startup VSTs, in the aggregator's sketch (qoe-math.ts); null when none started. */
  vstP50Ms: number | null;
  vstP95Ms: number | null;
  /** Σ stalled / Σ (played + stalled) (qoe-math.ts); null when nothing played. */
  rebufferRatio: number | null;
  stallsPerMin: number;
  /** Time-weighted over everything played, bits/s. */
  avgBitrate: number;
  switchesPerMin: number;
  failovers: number;
  bytes: number;
  playedS: number;
  stalledS: number;
  edges: EdgeSummary[];
  peakConcurrent: number;
  /** Session (virtual) time the run covered, ms. */
  simulatedMs: number;
  wallMs: number;
  /** send() calls the sink refused or rejected. */
  sinkErrors: number;
  /** Events the sink accepted but could deliver nowhere (broker and spill both unavailable), by reason. */
  eventsLost: Record<string, number>;
}

export interface RunResult {
  summary: RunSummary;
  sessions: SessionResult[];
}

/** Session `index`'s region: "a,b,c" gives sessions a, b, c, a, … (so one run can load every site). */
function regionOf(spec: string, index: number): string {
  if (!spec.includes(',')) return spec;
  const list = spec.split(',').filter((r) => r.length > 0);
  return list[index % list.length] ?? spec;
}

export const RUN_DEFAULTS = {
  players: 100,
  rampMs: 10_000,
  durationMs: 60_000,
  abr: 'throughput' as AbrName,
  network: 'const:5mbps',
  rttMs: 20,
  speed: 1,
  titles: 'zipf:0.9',
  seed: 42,
  cmcd: 'query' as CmcdMode,
  watchMeanS: 120,
  startThresholdS: 4,
  resumeThresholdS: 4,
  maxBufferS: 30,
  startTimeoutMs: 15_000,
  requestTimeoutMs: 5_000,
  giveUpMs: 30_000,
  heartbeatMs: 10_000,
  region: 'local',
  isps: ['isp-a', 'isp-b', 'isp-c'],
  devices: ['tv', 'desktop', 'mobile'],
};

type TitlePicker = (u: number) => string;

export function titlePicker(spec: string, catalog: string[] | undefined): TitlePicker {
  const s = spec.trim();
  const m = /^zipf(?::(\d+(?:\.\d+)?))?$/i.exec(s);
  if (m || /^uniform$/i.test(s)) {
    if (!catalog || catalog.length === 0)
      throw new OcdnError(ErrorCodes.CONFIG, `--titles ${spec} needs a catalog (seed content first, or list titles: --titles title-0001,title-0002)`);
    if (!m) return (u) => catalog[Math.min(catalog.length - 1, Math.floor(u * catalog.length))]!;
    const zipf = new Zipf(catalog.length, m[1] === undefined ? 0.9 : Number(m[1]));
    return (u) => catalog[zipf.rank(u) - 1]!;
  }
  const list = s
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
  if (list.length === 0) throw new OcdnError(ErrorCodes.CONFIG, `--titles "${spec}": use zipf:<s>, uniform, or a list of title ids`);
  for (const t of list) if (!/^[A-Za-z0-9._-]+$/.test(t)) throw new OcdnError(ErrorCodes.CONFIG, `--titles: "${t}" is not a title id`);
  return (u) => list[Math.min(list.length - 1, Math.floor(u * list.length))]!;
}

export function summarize(
  results: SessionResult[],
  meta: Pick<RunSummary, 'mode' | 'abr' | 'network' | 'seed' | 'players' | 'peakConcurrent' | 'simulatedMs' | 'wallMs'>,
): RunSummary {
  const exitReasons: Record<ExitReason, number> = { completed: 0, 'watch-time': 0, error: 0, 'start-failure': 0, aborted: 0 };
  const vst = vstSketch();
  let played = 0;
  let stalled = 0;
  let stalls = 0;
  let bitrateTime = 0;
  let switches = 0;
  let failovers = 0;
  let bytes = 0;
  let errors = 0;
  let sinkErrors = 0;
  const edges = new Map<string, EdgeUsage>();
  const refused = new Map<string, RefusedTitle>();
  let refusedSessions = 0;
  for (const r of results) {
    if (r.refused) {
      refusedSessions++;
      const key = `${r.title}\u0000${r.refused.status}\u0000${r.refused.code}`;
      const t = refused.get(key) ?? { title: r.title, ...r.refused, sessions: 0 };
      t.reason = r.refused.reason;
      t.sessions++;
      refused.set(key, t);
    }
    exitReasons[r.exitReason]++;
    if (r.vstMs !== undefined) vst.accept(r.vstMs);
    played += r.playedS;
    stalled += r.stalledS;
    stalls += r.stalls;
    bitrateTime += r.avgBitrate * r.playedS;
    switches += r.switches;
    failovers += r.failovers;
    bytes += r.bytes;
    errors += r.errors.length;
    sinkErrors += r.sinkErrors;
    for (const [id, u] of Object.entries(r.edges)) {
      const e = edges.get(id) ?? { bytes: 0, requests: 0, segments: 0, hits: 0, hitBytes: 0 };
      e.bytes += u.bytes;
      e.requests += u.requests;
      e.segments += u.segments;
      e.hits += u.hits;
      e.hitBytes += u.hitBytes;
      edges.set(id, e);
    }
  }
  const minutes = played / 60;
  return {
    ...meta,
    sessions: results.length,
    started: results.filter((r) => r.started).length,
    startFailures: exitReasons['start-failure'],
    errors,
    refusedSessions,
    refused: [...refused.values()].sort((a, b) => b.sessions - a.sessions || (a.title < b.title ? -1 : a.title > b.title ? 1 : a.status - b.status)),
    exitReasons,
    vstP50Ms: vstQuantileMs(vst, 0.5),
    vstP95Ms: vstQuantileMs(vst, 0.95),
    rebufferRatio: rebufferRatio(stalled, played),
    stallsPerMin: minutes > 0 ? stalls / minutes : 0,
    avgBitrate: played > 0 ? bitrateTime / played : 0,
    switchesPerMin: minutes > 0 ? switches / minutes : 0,
    failovers,
    bytes,
    playedS: played,
    stalledS: stalled,
    edges: [...edges.entries()]
      .sort((a, b) => (a[0] < b[0] ? -1 : 1))
      .map(([id, u]) => ({ id, ...u, hitRatio: u.segments > 0 ? u.hits / u.segments : 0, byteHitRatio: u.bytes > 0 ? u.hitBytes / u.bytes : 0 })),
    sinkErrors,
    eventsLost: {},
  };
}

/**
 * Runs many sessions: `players` of them started evenly over the ramp, each replaced by a new
 * one when it ends (with `loop`), all ended at `durationMs`. Real mode plays against edges
 * (--edge) or steering over undici; virtual mode plays against an in-memory CDN on a
 * simulated clock and returns when the simulation has run out of events.
 */
export async function runPlayers(opts: RunPlayersOptions = {}): Promise<RunResult> {
  const o = { ...RUN_DEFAULTS, ...stripUndefined(opts) };
  const wallStart = performance.now();
  if (!(o.players >= 1)) throw new OcdnError(ErrorCodes.CONFIG, `players must be ≥ 1 (got ${o.players})`);
  createAbr(o.abr); // validates the name before anything starts
  const traces: TraceFactory = parseTraceSpec(o.network, { seed: o.seed, readFile: opts.readFile });
  const sink = opts.sink ?? new NullSink();

  let clock: Clock;
  let virtualClock: VirtualClock | undefined;
  let cdn: VirtualCdn | undefined;
  let edgeSource: EdgeSource;
  let agent: Dispatcher | undefined;
  let ownAgent = false;
  let catalog = opts.catalog;
  if (o.virtual) {
    virtualClock = new VirtualClock();
    clock = virtualClock;
    cdn = opts.virtualCdn instanceof VirtualCdn ? opts.virtualCdn : new VirtualCdn(opts.virtualCdn);
    edgeSource = new VirtualSteering(cdn, clock);
    catalog ??= cdn.titles.map((t) => t.id);
  } else {
    if (!opts.steering && !(opts.edges && opts.edges.length > 0))
      throw new OcdnError(ErrorCodes.CONFIG, 'real mode needs --steering URL or --edge URL (or use --virtual)');
    clock = new RealClock(o.speed);
    agent = opts.agent ?? createPlayerAgent();
    ownAgent = !opts.agent;
    edgeSource = opts.steering ? new SteeringClient(opts.steering, agent) : new StaticEdges(opts.edges!, agent);
  }
  const pickTitle = titlePicker(o.titles, catalog);
  // Virtual runs are reproducible to the byte, ids included; real runs get fresh ids so two
  // runs with one seed do not collide in the aggregator's de-duplication.
  const runKey = o.virtual ? `ocdn-virtual:${o.seed}` : `ocdn-real:${o.seed}:${randomUUID()}`;

  const results: SessionResult[] = [];
  const active = new Set<SessionHandle>();
  let started = 0;
  let rampLaunched = 0;
  let peak = 0;
  let over = false;
  const maxSessions = opts.maxSessions ?? Number.POSITIVE_INFINITY;
  const cancels: (() => void)[] = [];
  let resolveDone!: () => void;
  const done = new Promise<void>((r) => (resolveDone = r));

  /** The run is done when nothing plays and nothing more will start. */
  const maybeDone = (): void => {
    if (active.size > 0) return;
    const moreToCome = !over && (rampLaunched < o.players || (o.loop && started < maxSessions));
    if (moreToCome) return;
    over = true;
    for (const c of cancels) c(); // lets the virtual clock run out of events
    resolveDone();
  };

  const launch = (): void => {
    if (over || started >= maxSessions) return;
    const index = started++;
    const rng = rngFor(o.seed, 'session', index);
    const title = pickTitle(rng());
    const watchS = o.watchMeanS === 'full' ? Number.POSITIVE_INFINITY : geometric(rng, 1 / Math.max(1, o.watchMeanS));
    const isp = o.isps[Math.floor(rng() * o.isps.length)]!;
    const device = o.devices[Math.floor(rng() * o.devices.length)]!;
    const t0 = clock.now();
    const trace = traces(String(index));
    let transport: Transport;
    if (cdn) transport = new VirtualTransport(cdn, clock, trace, t0, o.rttMs);
    else transport = new HttpTransport({ agent: agent!, clock, bucket: new TokenBucket(clock, trace, t0, o.burstMs ?? 20), rttMs: o.rttMs });
    if (opts.wrapTransport) transport = opts.wrapTransport(transport, index);
    const cfg: SessionConfig = {
      index,
      sessionId: uuidFrom(runKey, 'session', index),
      title,
      region: regionOf(o.region, index),
      isp,
      device,
      watchS,
      startThresholdS: o.startThresholdS,
      resumeThresholdS: o.resumeThresholdS,
      maxBufferS: o.maxBufferS,
      startTimeoutMs: o.startTimeoutMs,
      requestTimeoutMs: o.requestTimeoutMs,
      giveUpMs: o.giveUpMs,
      heartbeatMs: o.heartbeatMs,
      cmcd: o.cmcd,
      recordSegments: Boolean(o.recordSegments),
      abrCmsd: Boolean(o.abrCmsd),
    };
    const handle = startSession({ clock, transport, edges: edgeSource, sink, abr: createAbr(o.abr), runKey, onEvent: opts.onEvent }, cfg);
    active.add(handle);
    peak = Math.max(peak, active.size);
    void handle.done.then((r) => {
      active.delete(handle);
      results.push(r);
      opts.onSessionEnd?.(r);
      if (o.loop) launch();
      maybeDone();
    });
  };

  const stopAll = (): void => {
    over = true;
    for (const h of active) h.abort('aborted');
    maybeDone();
  };
  const onAbort = () => stopAll();
  opts.signal?.addEventListener('abort', onAbort, { once: true });

  const t0 = clock.now();
  const rampSlot = (): void => {
    rampLaunched++;
    launch();
    maybeDone();
  };
  for (let i = 0; i < o.players; i++) {
    const at = t0 + (o.players > 1 ? (i * o.rampMs) / o.players : 0);
    if (at <= t0) rampSlot();
    else cancels.push(clock.timer(at, rampSlot));
  }
  cancels.push(clock.timer(t0 + o.durationMs, stopAll));
  if (opts.signal?.aborted) stopAll();

  try {
    if (virtualClock) {
      await virtualClock.run();
      // Out of events with sessions still open means one is waiting on something that is not
      // the clock (a bug: virtual sessions must never touch real I/O). Fail loudly, not hang.
      if (active.size > 0) throw new OcdnError(ErrorCodes.INTERNAL, `virtual clock ran out of events with ${active.size} sessions still open`);
    }
    await done;
  } finally {
    over = true;
    for (const c of cancels) c();
    opts.signal?.removeEventListener('abort', onAbort);
    if (ownAgent) await (agent as { close(): Promise<void> }).close().catch(() => {});
  }
  results.sort((a, b) => a.index - b.index);
  const summary = summarize(results, {
    mode: o.virtual ? 'virtual' : 'real',
    abr: o.abr,
    network: o.network,
    seed: o.seed,
    players: o.players,
    peakConcurrent: peak,
    simulatedMs: clock.now() - t0,
    wallMs: performance.now() - wallStart,
  });
  summary.eventsLost = (sink as EventSink).lost?.() ?? {};
  return { summary, sessions: results };
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  const out: Partial<T> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  return out;
}

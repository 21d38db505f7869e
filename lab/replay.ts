import { createEdgeStore } from '../edge/policies/index.ts';
import type { ByteStore, CachePolicy } from '../edge/policies/types.ts';
import { createAbr, type AbrName } from '../player-sim/abr/index.ts';
import { parseTraceSpec } from '../player-sim/network.ts';
import { uuidFrom } from '../player-sim/rng.ts';
import { RUN_DEFAULTS, summarize, type RunSummary } from '../player-sim/runner.ts';
import { startSession, type SessionResult } from '../player-sim/session.ts';
import { NullSink } from '../player-sim/sinks.ts';
import { VirtualClock, VirtualTransport } from '../player-sim/virtual.ts';
import { getPolicy, type PolicyName } from '../steering/policies.ts';
import { CachingVirtualCdn, type EdgeTally } from './cache-cdn.ts';
import { LabSteering } from './steering.ts';
import type { Workload } from './workload.ts';

export interface ReplayOptions {
  steering: PolicyName;
  cachePolicy: CachePolicy;
  /** Per edge. */
  capacityBytes: number;
  abr: AbrName;
  /** --network spec of the players' access links. */
  network: string;
  /** Player ↔ edge round trip, ms. */
  rttMs: number;
  /** Edge ↔ origin round trip, added to the TTFB of every cache miss, ms. */
  originRttMs: number;
}

export interface ReplayResult {
  summary: RunSummary;
  edges: EdgeTally[];
  /** Virtual time from the first arrival to the last session's end, ms. */
  simulatedMs: number;
}

/**
 * Plays the workload's sessions through player-sim's real session loop, ABR and network model
 * on a virtual clock, steered by steering's real ranking policy, against edges whose segment
 * caches are the real eviction stores. Everything is a function of the inputs: no sockets,
 * no wall-clock, no Math.random.
 */
export async function replay(w: Workload, o: ReplayOptions): Promise<ReplayResult> {
  const clock = new VirtualClock();
  const stores = new Map<string, ByteStore<number>>();
  for (const e of w.edges) stores.set(e.id, createEdgeStore<number>(o.cachePolicy, o.capacityBytes));
  const { titles, durationSec, segmentSec, ladder } = w.options;
  const cdn = new CachingVirtualCdn(
    { titles, durationSec, segmentSec, ladder, edges: w.edges.map((e) => ({ id: e.id, region: e.region })), missPenaltyMs: o.originRttMs },
    stores,
    clock,
  );
  const steering = new LabSteering(getPolicy(o.steering), w.edges, cdn, w.options.seed);
  // The traces depend on the seed and the session alone, so every combination gets the same viewers on the same links.
  const traces = parseTraceSpec(o.network, { seed: w.options.seed });
  const sink = new NullSink();
  const runKey = `ocdn-lab:${w.options.seed}`;
  const results: SessionResult[] = [];
  const pending: Promise<void>[] = [];
  let peak = 0;
  let active = 0;

  for (const s of w.sessions) {
    clock.timer(s.atMs, () => {
      const sessionId = uuidFrom(runKey, 'session', s.index);
      const transport = new VirtualTransport(cdn, clock, traces(String(s.index)), clock.now(), o.rttMs);
      const handle = startSession(
        { clock, transport, edges: steering, sink, abr: createAbr(o.abr), runKey },
        {
          index: s.index,
          sessionId,
          title: s.title,
          region: s.region,
          isp: s.isp,
          device: s.device,
          watchS: s.watchS,
          startThresholdS: RUN_DEFAULTS.startThresholdS,
          resumeThresholdS: RUN_DEFAULTS.resumeThresholdS,
          maxBufferS: RUN_DEFAULTS.maxBufferS,
          startTimeoutMs: RUN_DEFAULTS.startTimeoutMs,
          requestTimeoutMs: RUN_DEFAULTS.requestTimeoutMs,
          giveUpMs: RUN_DEFAULTS.giveUpMs,
          // Heartbeats only feed telemetry, which a lab run discards: one a minute keeps the event count down.
          heartbeatMs: 60_000,
          cmcd: 'off',
          recordSegments: false,
        },
      );
      active++;
      peak = Math.max(peak, active);
      pending.push(
        handle.done.then((r) => {
          active--;
          steering.release(sessionId);
          results.push(r);
        }),
      );
    });
  }
  await clock.run();
  await Promise.all(pending);
  results.sort((a, b) => a.index - b.index);
  const simulatedMs = clock.now();
  const summary = summarize(results, {
    mode: 'virtual',
    abr: o.abr,
    network: o.network,
    seed: w.options.seed,
    players: w.sessions.length,
    peakConcurrent: peak,
    simulatedMs,
    wallMs: 0,
  });
  return { summary, edges: [...cdn.tallies.values()], simulatedMs };
}

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEdge, type Edge } from '../../edge/server.ts';
import { ThroughputAbr, type AbrState } from '../../player-sim/abr/index.ts';
import { runPlayers } from '../../player-sim/runner.ts';
import { cmsdHintOf } from '../../player-sim/session.ts';
import { MemorySink } from '../../player-sim/sinks.ts';
import type { QoeEvent } from '../../telemetry/events.ts';
import { startTestCdn, type TestCdn } from './helpers.ts';

const LADDER = [365_000, 1_100_000, 3_000_000];

function state(over: Partial<AbrState>): AbrState {
  return {
    bitrates: LADDER,
    segmentDurationS: 4,
    bufferS: 10,
    lastIndex: 0,
    throughputBps: 20_000_000,
    nowS: 10,
    lastDownload: undefined,
    rebuffered: false,
    starting: false,
    abandoned: undefined,
    ...over,
  };
}

describe('throughput ABR with a CMSD hint', () => {
  it('steps up on its own estimate, but not while the edge reports du (one rung down instead)', () => {
    const abr = new ThroughputAbr();
    expect(abr.decide(state({}))).toBe(2);
    expect(abr.decide(state({ cmsd: { etpBps: undefined, duress: true } }))).toBe(0);
    expect(abr.decide(state({ lastIndex: 2, cmsd: { etpBps: undefined, duress: true } }))).toBe(1);
    expect(abr.decide(state({ lastIndex: 2, cmsd: { etpBps: 50_000_000, duress: false } }))).toBe(2);
  });

  it('decides on min(own estimate, etp)', () => {
    const abr = new ThroughputAbr();
    // Going up needs bitrate ≤ 0.7 × estimate: 1.05 M < 1100k with etp 1.5 Mbps, 1.4 M ≥ 1100k with 2 Mbps.
    expect(abr.decide(state({ cmsd: { etpBps: 1_500_000, duress: false } }))).toBe(0);
    expect(abr.decide(state({ cmsd: { etpBps: 2_000_000, duress: false } }))).toBe(1);
    // A higher etp never raises the choice over the player's own estimate.
    expect(abr.decide(state({ throughputBps: 1_000_000, cmsd: { etpBps: 50_000_000, duress: false } }))).toBe(0);
  });

  it('reads the hint from the last CMSD-Dynamic item (the serving edge)', () => {
    expect(cmsdHintOf('"shield";etp=100;du, "edge";etp=2000')).toEqual({ etpBps: 2_000_000, duress: false });
    expect(cmsdHintOf('"edge";du')).toEqual({ etpBps: undefined, duress: true });
    expect(cmsdHintOf('"edge";etp=')).toBeUndefined();
    expect(cmsdHintOf(undefined)).toBeUndefined();
  });
});

describe('players over a real edge in duress', () => {
  const TITLE_SEC = 20;
  let cdn: TestCdn;
  let busy: Edge;

  beforeAll(async () => {
    cdn = await startTestCdn({ titles: 1, durationSec: TITLE_SEC, ladder: 'small', edges: ['edge-calm'] });
    // -1: in duress whatever is in flight, for the whole run.
    busy = await startEdge({ id: 'edge-busy', region: 'local', capacityBytes: 64 * 1024 * 1024, origin: cdn.reader, tokenSecret: null, duressInFlight: -1 });
  });
  afterAll(async () => {
    await busy?.close();
    await cdn?.close();
  });

  async function renditions(edge: Edge, abrCmsd: boolean): Promise<string[]> {
    const sink = new MemorySink();
    const { sessions } = await runPlayers({
      edges: [edge.url],
      players: 1,
      rampMs: 0,
      durationMs: 120_000,
      loop: false,
      speed: 4,
      startTimeoutMs: 60_000,
      requestTimeoutMs: 20_000,
      network: 'const:20mbps',
      abr: 'throughput',
      titles: 'title-0001',
      watchMeanS: 'full',
      abrCmsd,
      sink,
    });
    expect(sessions[0]!.exitReason).toBe('completed');
    return sink.events.filter((e): e is Extract<QoeEvent, { type: 'segment' }> => e.type === 'segment').map((e) => e.rendition);
  }

  it('without the hint the ABR climbs; with it, du keeps it at the bottom; a calm edge is unaffected', async () => {
    const plain = await renditions(busy, false);
    expect(plain.at(-1)).toBe('3000k');
    const hinted = await renditions(busy, true);
    expect(hinted).toHaveLength(plain.length);
    expect(new Set(hinted)).toEqual(new Set(['365k']));
    const calm = await renditions(cdn.edges[0]!, true);
    expect(calm.at(-1)).toBe('3000k');
  });
});

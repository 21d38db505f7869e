/**
 * The whole product end to end: real processes (S3, steering, 3 edges, aggregator) started by
 * `clusterUp`, the test run's real Kafka broker, 50 real-HTTP players, and then the QoE the
 * aggregator shows compared with what the players themselves recorded.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { waitFor } from '../../common/http.ts';
import { readMetric } from '../../common/metrics.ts';
import { killEdge } from '../../scripts/chaos.ts';
import { clusterDown, clusterStatus, clusterUp } from '../../scripts/cluster/cluster.ts';
import { freePortBlock, isAlive, portInUse } from '../../common/ports.ts';
import { seedIfEmpty } from '../../scripts/cluster/start.ts';
import { readState, type ClusterState } from '../../scripts/cluster/state.ts';
import { fetchCatalog } from '../../scripts/catalog-client.ts';
import { runPlayers } from '../../player-sim/runner.ts';
import { createProducer } from '../../telemetry/producer.ts';
import type { QoeEvent, SessionEndEvent } from '../../telemetry/events.ts';
import type { QoeResponse, QoeRow, SteerResponse } from '../../common/contracts.ts';

async function qoe(state: ClusterState, by: string): Promise<QoeRow[]> {
  const res = await fetch(`${state.aggregatorUrl}/v1/qoe?by=${by}&last=24h`);
  if (!res.ok) throw new Error(`aggregator ${res.status}`);
  return ((await res.json()) as QoeResponse).totals;
}

describe('local cluster end to end', () => {
  let dir: string;
  let state: ClusterState;
  const brokers = inject('kafkaBrokers');

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ocdn-e2e-'));
    state = await clusterUp({
      dir,
      edges: 3,
      basePort: await freePortBlock([0, 1, 2, 3, 90, 100, 169]),
      kafka: brokers,
      capacity: '256MB',
      shield: true,
      readyTimeoutMs: 90_000,
    });
    await seedIfEmpty(state, { titles: 4, titleDurationSec: 180, ladder: 'small' }, () => undefined);
  }, 240_000);

  afterAll(async () => {
    if (state) await clusterDown(state.dir).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }, 120_000);

  it("50 players × 60 s at speed 4: aggregates equal the players' own records, for every edge and title", async () => {
    const catalog = await fetchCatalog(state.s3Endpoint, state.bucket);
    const producer = createProducer({ brokers: state.brokers, clientId: 'e2e-players', spillFile: join(dir, 'spill-1.jsonl') });
    const ends: SessionEndEvent[] = [];
    const segments: QoeEvent[] = [];
    const run = await runPlayers({
      players: 50,
      rampMs: 8_000,
      durationMs: 60_000,
      loop: false,
      speed: 4,
      steering: state.steeringUrl,
      catalog: catalog!.titles.map((t) => t.id),
      titles: 'zipf:0.9',
      network: 'const:8mbps',
      watchMeanS: 'full',
      // One region per edge: steering puts each site's players on its own edge first.
      region: 'us-east,us-west,eu-west',
      sink: producer,
      seed: 7,
      onEvent: (e) => {
        if (e.type === 'session_end') ends.push(e);
        if (e.type === 'segment') segments.push(e);
      },
    });
    await producer.close();
    expect(run.summary.sessions).toBe(50);
    expect(run.summary.startFailures).toBe(0);
    expect(ends).toHaveLength(50);

    const stall = ends.reduce((s, e) => s + e.stalledS, 0);
    const played = ends.reduce((s, e) => s + e.playedS, 0);
    const bytes = segments.reduce((s, e) => s + (e.type === 'segment' ? e.bytes : 0), 0);
    const all = await waitFor(
      async () => {
        const rows = await qoe(state, 'all');
        const r = rows[0];
        return r && r.sessionEnds === 50 && r.segments === segments.length ? r : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 500, what: 'aggregates to count all 50 session ends' },
    );
    expect(all.sessions).toBe(50);
    expect(all.stallS).toBeCloseTo(stall, 6);
    expect(all.playS).toBeCloseTo(played, 6);
    expect(all.segmentBytes).toBe(bytes);
    expect(all.sessionBytes).toBe(ends.reduce((s, e) => s + e.bytes, 0));

    // Every edge and every title the players used has its own rows, and they add up.
    const usedEdges = new Set(segments.map((e) => e.edgeId));
    expect([...usedEdges].sort()).toEqual(['edge-1', 'edge-2', 'edge-3']);
    const byEdge = await qoe(state, 'edge');
    for (const id of usedEdges)
      expect(
        byEdge.find((r) => r.value === id),
        `edge ${id}`,
      ).toBeDefined();
    expect(byEdge.reduce((s, r) => s + r.segmentBytes, 0)).toBe(bytes);
    // session_start goes out once the session has its edge, so sessions count per edge too.
    expect(byEdge.reduce((s, r) => s + r.sessions, 0)).toBe(50);
    const usedTitles = new Set(ends.map((e) => e.title));
    const byTitle = await qoe(state, 'title');
    for (const t of usedTitles) expect(byTitle.find((r) => r.value === t)?.sessionEnds, `title ${t}`).toBe(ends.filter((e) => e.title === t).length);

    // The shield took the edges' misses: S3 saw at most one GET per object the edges fetched.
    const shield = state.components.find((c) => c.kind === 'shield')!;
    const fetches = async (url: string) => readMetric(await (await fetch(`${url}/metrics`)).text(), 'ocdn_edge_origin_fetches_total');
    const edgeFetches = (await Promise.all(state.components.filter((c) => c.kind === 'edge').map((c) => fetches(c.url)))).reduce((a, b) => a + b, 0);
    const shieldFetches = await fetches(shield.url);
    expect(shieldFetches).toBeGreaterThan(0);
    expect(shieldFetches).toBeLessThanOrEqual(edgeFetches);
  }, 240_000);

  it('killing one of three edges every 15 s during playback fails no session and shows failovers', async () => {
    const catalog = await fetchCatalog(state.s3Endpoint, state.bucket);
    const producer = createProducer({ brokers: state.brokers, clientId: 'e2e-chaos', spillFile: join(dir, 'spill-2.jsonl') });
    const before = (await qoe(state, 'all'))[0]?.failovers ?? 0;
    const failovers: QoeEvent[] = [];
    const killed: string[] = [];
    let stop = false;
    const chaos = (async () => {
      // First kill once every session is playing, then every 15 s.
      const first = Date.now() + 6_000;
      await waitFor(() => stop || Date.now() >= first, { timeoutMs: 7_000, intervalMs: 100 }).catch(() => undefined);
      while (!stop) {
        // The edge steering puts the most popular title on: the one most players are using.
        const steer = (await (await fetch(`${state.steeringUrl}/v1/steer?title=${catalog!.titles[0]!.id}`)).json()) as SteerResponse;
        killed.push(await killEdge(state.dir, { id: steer.edges[0]!.id, restartAfterMs: 4_000, log: () => undefined }));
        const next = Date.now() + 15_000;
        await waitFor(() => stop || Date.now() >= next, { timeoutMs: 16_000, intervalMs: 100 }).catch(() => undefined);
      }
    })();
    const run = await runPlayers({
      players: 30,
      rampMs: 4_000,
      durationMs: 160_000,
      loop: false,
      speed: 4,
      steering: state.steeringUrl,
      catalog: catalog!.titles.map((t) => t.id),
      network: 'const:8mbps',
      watchMeanS: 'full',
      sink: producer,
      seed: 11,
      onEvent: (e) => {
        if (e.type === 'failover') failovers.push(e);
      },
    });
    stop = true;
    await chaos;
    await producer.close();
    expect(killed.length).toBeGreaterThan(0);
    expect(run.summary.startFailures).toBe(0);
    expect(run.summary.exitReasons.error ?? 0).toBe(0);
    expect(failovers.length).toBeGreaterThan(0);
    let seen: QoeRow | undefined;
    await waitFor(
      async () => {
        seen = (await qoe(state, 'all'))[0];
        return (seen?.failovers ?? 0) - before === failovers.length;
      },
      { timeoutMs: 60_000, intervalMs: 500, what: `failover events in the aggregates (players sent ${failovers.length})` },
    ).catch((err: Error) => {
      throw new Error(`${err.message}; aggregator shows ${JSON.stringify(seen)} (before: ${before})`);
    });
  }, 300_000);

  it('cluster status shows every component alive and healthy; cluster down leaves no process and no bound port', async () => {
    const status = (await clusterStatus(state.dir))!;
    expect(status.components.map((c) => c.name).sort()).toEqual(['aggregator', 'edge-1', 'edge-2', 'edge-3', 'kafka', 's3', 'shield-1', 'steering']);
    for (const c of status.components) expect({ name: c.name, alive: c.alive, healthy: c.healthy }).toEqual({ name: c.name, alive: true, healthy: true });
    const now = (await readState(state.dir))!;
    const pids = now.components.filter((c) => !c.external).map((c) => c.pid);
    const ports = now.components.filter((c) => !c.external && c.port > 0).map((c) => c.port);
    await clusterDown(state.dir);
    for (const pid of pids) expect(isAlive(pid), `pid ${pid}`).toBe(false);
    for (const port of ports) expect(await portInUse(port), `port ${port}`).toBe(false);
  }, 120_000);
});

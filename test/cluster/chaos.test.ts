/**
 * Faults injected into a running cluster with its OWN Kafka broker (so restarting it cannot
 * disturb other test files): a Kafka restart during playback loses no event, and a 20 s origin
 * outage does not stop titles the edges hold from playing.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { QoeResponse, QoeRow } from '../../common/contracts.ts';
import { waitFor } from '../../common/http.ts';
import { runPlayers } from '../../player-sim/runner.ts';
import { fetchCatalog } from '../../scripts/catalog-client.ts';
import { kafkaRestart, originOutage } from '../../scripts/chaos.ts';
import { clusterDown, clusterUp } from '../../scripts/cluster/cluster.ts';
import { freePortBlock } from '../../common/ports.ts';
import { seedIfEmpty } from '../../scripts/cluster/start.ts';
import type { ClusterState } from '../../scripts/cluster/state.ts';
import { proactiveFill } from '../../scripts/fill.ts';
import { createProducer } from '../../telemetry/producer.ts';

/** What the aggregator says of itself (/healthz) and the tail of its log, for a failure message. */
async function aggregatorPostMortem(state: ClusterState): Promise<string> {
  const health = await fetch(`${state.aggregatorUrl}/healthz`)
    .then((r) => r.text())
    .catch((e: Error) => e.message);
  const log = await readFile(join(state.dir, 'logs', 'aggregator.log'), 'utf8').catch((e: Error) => e.message);
  return `healthz ${health}; log tail:\n${log.split('\n').slice(-30).join('\n')}`;
}

describe('chaos in a running cluster', () => {
  let dir: string;
  let state: ClusterState;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ocdn-chaos-'));
    state = await clusterUp({
      dir,
      edges: 3,
      basePort: await freePortBlock([0, 1, 2, 3, 100, 169], { lo: 10_000, span: 8_000 }),
      kafka: 'local',
      // Between its cluster's ports (below 18,200) and the lanes other test files draw from (20,000+).
      kafkaPort: await freePortBlock([0, 1], { lo: 18_500, span: 1_400 }),
      readyTimeoutMs: 180_000,
    });
    await seedIfEmpty(state, { titles: 2, titleDurationSec: 120, ladder: 'small' }, () => undefined);
  }, 300_000);

  afterAll(async () => {
    if (state) await clusterDown(state.dir).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }, 120_000);

  it('restarting Kafka during playback loses no event (produced = aggregated)', async () => {
    const catalog = await fetchCatalog(state.s3Endpoint, state.bucket);
    const producer = createProducer({ brokers: state.brokers, clientId: 'chaos-players', spillFile: join(dir, 'spill.jsonl'), retryMs: 250 });
    let produced = 0;
    const players = runPlayers({
      players: 20,
      rampMs: 4_000,
      durationMs: 120_000,
      loop: false,
      speed: 4,
      steering: state.steeringUrl,
      catalog: catalog!.titles.map((t) => t.id),
      network: 'const:6mbps',
      watchMeanS: 'full',
      sink: producer,
      seed: 5,
      onEvent: () => produced++,
    });
    await waitFor(() => produced > 200, { timeoutMs: 30_000, what: 'players producing events' });
    await kafkaRestart(state.dir, () => undefined);
    const run = await players;
    await producer.close();
    expect(run.summary.startFailures).toBe(0);
    expect(producer.backlog()).toMatchObject({ memory: 0, spill: 0 });
    let seen: QoeRow | undefined;
    await waitFor(
      async () => {
        const res = await fetch(`${state.aggregatorUrl}/v1/qoe?by=all&last=24h`);
        seen = ((await res.json()) as QoeResponse).totals[0];
        return seen !== undefined && seen.events + seen.late === produced;
      },
      { timeoutMs: 90_000, intervalMs: 500, what: `all ${produced} produced events in the aggregates` },
    ).catch(async (err: Error) => {
      throw new Error(`${err.message}; aggregator shows ${JSON.stringify(seen)}; ${await aggregatorPostMortem(state)}`);
    });
  }, 300_000);

  it('a 20 s origin outage: titles the edges hold keep playing', async () => {
    const catalog = (await fetchCatalog(state.s3Endpoint, state.bucket))!;
    const edges = state.components.filter((c) => c.kind === 'edge');
    const plan = await proactiveFill({
      catalog,
      top: catalog.titles.length,
      bytesPerSecond: 500e6,
      steeringUrl: state.steeringUrl,
      regions: [...new Set(edges.map((e) => e.region!))],
      edges: edges.map((e) => ({ id: e.name, url: e.url })),
      adminToken: state.adminToken,
      wait: true,
    });
    expect(plan.left).toEqual([]);
    expect(plan.done.length).toBeGreaterThan(0);
    expect(plan.done.every((p) => p.status === 200)).toBe(true);
    const lines: string[] = [];
    const outage = originOutage(state.dir, 20_000, (l) => lines.push(l));
    await waitFor(() => lines.some((l) => l.startsWith('origin down')), { timeoutMs: 10_000, what: 'origin down' });
    const run = await runPlayers({
      players: 20,
      rampMs: 2_000,
      durationMs: 48_000,
      loop: false,
      speed: 4,
      steering: state.steeringUrl,
      catalog: catalog.titles.map((t) => t.id),
      network: 'const:6mbps',
      watchMeanS: 'full',
      seed: 9,
    });
    // The players ran entirely inside the outage.
    expect(lines.some((l) => l.startsWith('origin back'))).toBe(false);
    await outage;
    expect(run.summary.sessions).toBe(20);
    expect(run.summary.startFailures).toBe(0);
    expect(run.summary.exitReasons.error ?? 0).toBe(0);
  }, 300_000);
});

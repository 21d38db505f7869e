/**
 * Miss classification in a real cluster (issue 15): 3 edges in one site with cold caches,
 * players steered to them, edge-1 SIGKILLed mid-run. Steering publishes its decisions, the
 * edges their access records, the aggregator joins them, and `ocdn qoe misses --json` shows
 * content misses (cold caches), health misses (the players that failed over from edge-1) and
 * local hits, whose bytes add up to what the players received from each edge.
 */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { EdgeAccessPackSchema } from '../../common/contracts.ts';
import { bodyValidator, waitFor } from '../../common/http.ts';
import type { MissReport } from '../../cli/telemetry.ts';
import { runPlayers } from '../../player-sim/runner.ts';
import type { Transport } from '../../player-sim/transport.ts';
import { fetchCatalog } from '../../scripts/catalog-client.ts';
import { killEdge } from '../../scripts/chaos.ts';
import type { ClusterState } from '../../scripts/cluster/state.ts';
import { cliEnv, runCli } from '../cli-run.ts';
import { type SiteCluster, siteCluster } from './helpers.ts';

const SITE = 'us-east';

async function misses(state: ClusterState, by: string): Promise<MissReport> {
  const r = await runCli(['qoe', 'misses', '--json', '--by', by, '--url', state.aggregatorUrl], cliEnv());
  if (r.code !== 0) throw new Error(`ocdn qoe misses exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as MissReport;
}

const classified = (r: MissReport['rows'][number] | undefined) =>
  r === undefined ? 0 : r.localHitBytes + r.contentMissBytes + r.healthMissBytes + r.otherMissBytes;

describe('cache-miss classification in a running cluster', () => {
  let cluster: SiteCluster;
  let state: ClusterState;
  let namespace: string;
  const brokers = inject('kafkaBrokers');

  beforeAll(async () => {
    cluster = await siteCluster('misses', SITE, { titles: 4, titleDurationSec: 120 });
    ({ state, namespace } = cluster);
  }, 240_000);

  afterAll(async () => cluster?.close(), 120_000);

  it('shows content misses, health misses after the kill and local hits, adding up to the bytes served', async () => {
    const catalog = (await fetchCatalog(state.s3Endpoint, state.bucket))!;
    // Per edge, two bounds on what it sent the players. `received`: the body bytes the players
    // read, which the edge wrote at least. `offered`: the Content-Length of each answer whose body
    // began to flow, which the edge wrote at most. A hit handed over whole is recorded at its
    // length even if the player then leaves; a streamed miss cut by the run's end or an abandon
    // is recorded at what reached the socket, which lies between the two.
    const received = new Map<string, number>();
    const offered = new Map<string, number>();
    /** Bytes from edge-1 in the last moments before its kill: its unsent batch dies with it. */
    const edge1At: { t: number; bytes: number }[] = [];
    const unsure: { edge: string; url: string; range: number | undefined }[] = [];
    const edgeOf = new Map(state.components.filter((c) => c.kind === 'edge').map((c) => [new URL(c.url).host, c.name]));
    const add = (m: Map<string, number>, edge: string, bytes: number) => m.set(edge, (m.get(edge) ?? 0) + bytes);
    const note = (edge: string, got: number, length: number) => {
      add(received, edge, got);
      add(offered, edge, length);
      if (edge === 'edge-1') edge1At.push({ t: Date.now(), bytes: got });
    };
    const count: (t: Transport) => Transport = (t) => ({
      fetch: async (req) => {
        const edge = edgeOf.get(new URL(req.url).host);
        let length: number | undefined;
        let got = 0;
        const inner = req.onProgress;
        const onProgress = (p: Parameters<NonNullable<typeof inner>>[0]) => {
          length ??= p.totalBytes;
          got = p.bytes;
          return inner?.(p) ?? false;
        };
        let ok = true;
        try {
          const res = await t.fetch({ ...req, onProgress });
          ok = res.status === 200 || res.status === 206;
          got = res.bytes;
          return res;
        } catch (err) {
          // No answer seen (the run ended or the edge died on it): the edge may or may not have sent one.
          if (edge !== undefined && length === undefined) unsure.push({ edge, url: req.url, range: req.range?.length });
          throw err;
        } finally {
          if (edge !== undefined && ok && length !== undefined) note(edge, got, length);
        }
      },
    });
    const players = runPlayers({
      players: 16,
      rampMs: 3_000,
      durationMs: 60_000,
      loop: false,
      speed: 4,
      steering: state.steeringUrl,
      region: SITE,
      catalog: catalog.titles.map((t) => t.id),
      network: 'const:8mbps',
      watchMeanS: 'full',
      seed: 15,
      wrapTransport: count,
    });
    // Mid-run, once edge-1 carries sessions (so some players must fail over from it).
    await waitFor(() => (received.get('edge-1') ?? 0) > 2e6 && [...received.values()].reduce((a, b) => a + b, 0) > 8e6, {
      timeoutMs: 60_000,
      what: 'edge-1 serving players',
    });
    // killEdge returns once steering has noticed: the kill itself is at its start.
    const killedAt = Date.now();
    await killEdge(state.dir, { id: 'edge-1', log: () => undefined });
    const run = await players;
    expect(run.summary.sessions).toBeGreaterThan(0);
    expect(run.summary.failovers ?? 0).toBeGreaterThan(0);

    // The surviving edges flushed everything: their classified (and unmatched) bytes reach what the players got.
    let byEdge: MissReport | undefined;
    const accounted = (r: MissReport, e: string) => classified(r.rows.find((x) => x.value === e));
    await waitFor(
      async () => {
        byEdge = await misses(state, 'edge');
        return ['edge-2', 'edge-3'].every((e) => accounted(byEdge!, e) + byEdge!.unmatchedAccessBytes >= (received.get(e) ?? 0));
      },
      { timeoutMs: 90_000, intervalMs: 1_000, what: 'the aggregator to classify every byte of edge-2 and edge-3' },
    ).catch(async (err: Error) => {
      const log = await readFile(join(state.dir, 'logs', 'aggregator.log'), 'utf8').catch((e: Error) => e.message);
      const health = await fetch(`${state.aggregatorUrl}/healthz`).then((r) => r.text());
      // Where records could have gone: the edges' record and producer counters, the aggregator's DLQ.
      const counters = async (url: string) =>
        (await fetch(`${url}/metrics`).then((r) => r.text()))
          .split('\n')
          .filter((l) => /^ocdn_(edge_access_records|telemetry_producer_events|telemetry_dlq)/.test(l))
          .join(' ');
      const sources = [...state.components.filter((c) => c.name === 'edge-2' || c.name === 'edge-3'), { name: 'aggregator', url: state.aggregatorUrl }];
      const metrics = await Promise.all(sources.map(async (c) => `${c.name}: ${await counters(c.url).catch((e: Error) => e.message)}`));
      err.message += `; ${metrics.join('; ')}`;
      throw new Error(
        `${err.message}; players read ${JSON.stringify([...received])} of ${JSON.stringify([...offered])}; misses ${JSON.stringify(byEdge)}; ${health}; ${log.slice(-2_000)}`,
      );
    });
    const report = byEdge!;
    const totals = report.rows.reduce(
      (t, r) => ({
        localHitBytes: t.localHitBytes + r.localHitBytes,
        contentMissBytes: t.contentMissBytes + r.contentMissBytes,
        healthMissBytes: t.healthMissBytes + r.healthMissBytes,
        otherMissBytes: t.otherMissBytes + r.otherMissBytes,
      }),
      { localHitBytes: 0, contentMissBytes: 0, healthMissBytes: 0, otherMissBytes: 0 },
    );
    expect(totals.contentMissBytes).toBeGreaterThan(0);
    expect(totals.healthMissBytes).toBeGreaterThan(0);
    expect(totals.localHitBytes).toBeGreaterThan(0);
    expect(totals.otherMissBytes).toBe(0);
    // Every session asked steering first, so every access has its decision.
    expect(report.unmatchedAccesses).toBe(0);

    // Requests that ended without an answer the player saw: their size, asked of a surviving edge.
    const alive = state.components.find((c) => c.name === 'edge-2')!;
    const unsureBytes = new Map<string, number>();
    for (const u of unsure) {
      let n = u.range;
      if (n === undefined) {
        const url = new URL(u.url);
        const head = await fetch(`${alive.url}${url.pathname}`, { method: 'HEAD' });
        n = head.ok ? Number(head.headers.get('content-length') ?? 0) : 0;
      }
      unsureBytes.set(u.edge, (unsureBytes.get(u.edge) ?? 0) + n);
    }
    // The classes add up to the bytes served: at least what the players read, at most what the
    // edges offered, within the unmatched bytes and the answers the players did not see; for
    // edge-1, within what it served in its last moments (its batch of records died with it).
    for (const e of ['edge-2', 'edge-3']) {
      expect(accounted(report, e) + report.unmatchedAccessBytes).toBeGreaterThanOrEqual(received.get(e) ?? 0);
      expect(accounted(report, e)).toBeLessThanOrEqual((offered.get(e) ?? 0) + (unsureBytes.get(e) ?? 0) + report.unmatchedAccessBytes);
    }
    // Its records are flushed every 100 ms, then batched by the producer: what it served in the
    // last 1.5 s before the kill may have died with it.
    const lastSecond = edge1At.filter((x) => x.t >= killedAt - 1_500).reduce((s, x) => s + x.bytes, 0);
    const e1 = accounted(report, 'edge-1');
    expect(e1).toBeLessThanOrEqual((offered.get('edge-1') ?? 0) + (unsureBytes.get('edge-1') ?? 0) + report.unmatchedAccessBytes);
    expect((received.get('edge-1') ?? 0) - e1).toBeLessThanOrEqual(lastSecond + report.unmatchedAccessBytes);

    // Health misses are bytes the surviving edges served to players that came from edge-1.
    expect(report.rows.find((r) => r.value === 'edge-1')?.healthMissBytes ?? 0).toBe(0);
    // By region: the client's site; by title: every title played.
    const byRegion = await misses(state, 'region');
    expect(byRegion.rows.map((r) => r.value)).toEqual([SITE]);
    expect(classified(byRegion.rows[0])).toBe(totals.localHitBytes + totals.contentMissBytes + totals.healthMissBytes + totals.otherMissBytes);
    const byTitle = await misses(state, 'title');
    expect(byTitle.rows.reduce((s, r) => s + classified(r), 0)).toBe(classified(byRegion.rows[0]));

    // The access topic read by a Kafka client we did not write: every line is an EdgeAccessPack,
    // and the surviving edges' packs hold at least the bytes the players read from them.
    const { stdout } = await promisify(execFile)('kcat', ['-b', brokers, '-C', '-t', `${namespace}.ocdn.edge.access.v1`, '-e', '-q', '-f', '%s\n'], {
      maxBuffer: 256 * 1024 * 1024,
      timeout: 60_000,
    });
    const checkPack = bodyValidator(EdgeAccessPackSchema, 'edge access pack');
    const packed = new Map<string, number>();
    for (const line of stdout.split('\n').filter((l) => l !== '')) {
      const pack = checkPack(JSON.parse(line));
      for (const [, , bytes] of pack.records) packed.set(pack.edge, (packed.get(pack.edge) ?? 0) + bytes);
    }
    for (const e of ['edge-2', 'edge-3']) expect(packed.get(e) ?? 0).toBeGreaterThanOrEqual(received.get(e) ?? 0);
  }, 300_000);
});

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MissReport } from '../../cli/telemetry.ts';
import { waitFor } from '../../common/http.ts';
import { runPlayers } from '../../player-sim/runner.ts';
import type { Transport } from '../../player-sim/transport.ts';
import { fetchCatalog } from '../../scripts/catalog-client.ts';
import type { ClusterState } from '../../scripts/cluster/state.ts';
import { FillController, observeEdges } from '../../scripts/fill-controller.ts';
import { parseWindow } from '../../scripts/fill-plan.ts';
import { cliEnv, runCli } from '../cli-run.ts';
import { type SiteCluster, siteCluster } from './helpers.ts';

const SITE = 'us-east';

type Row = MissReport['rows'][number];
const classified = (r: Row | undefined) => (r === undefined ? 0 : r.localHitBytes + r.contentMissBytes + r.healthMissBytes + r.otherMissBytes);

describe('a fill cycle and the content misses it was planned from', () => {
  let cluster: SiteCluster;
  let state: ClusterState;

  beforeAll(async () => {
    cluster = await siteCluster('fill-effect', SITE, { titles: 3, titleDurationSec: 60 });
    state = cluster.state;
  }, 240_000);

  afterAll(async () => cluster?.close(), 120_000);

  it('after one cycle the filled title is served with no content-miss bytes where the same players had them cold', async () => {
    const catalog = (await fetchCatalog(state.s3Endpoint, state.bucket))!;
    const title = catalog.titles[1]!.id;
    const edgeHosts = new Set(state.components.filter((c) => c.kind === 'edge').map((c) => new URL(c.url).host));
    let received = 0;
    const count: (t: Transport) => Transport = (t) => ({
      fetch: async (req) => {
        const res = await t.fetch(req);
        if (edgeHosts.has(new URL(req.url).host)) received += res.bytes;
        return res;
      },
    });
    // The same players, the same seed, both times: only what the edges hold differs.
    const play = () =>
      runPlayers({
        players: 6,
        rampMs: 1_000,
        durationMs: 40_000,
        loop: false,
        speed: 4,
        steering: state.steeringUrl,
        region: SITE,
        catalog: [title],
        network: 'const:8mbps',
        watchMeanS: 'full',
        seed: 21,
        wrapTransport: count,
      });
    /** The title's row once the aggregator has classified at least every byte the players read. */
    const settled = async (): Promise<Row> => {
      let row: Row | undefined;
      let report: MissReport | undefined;
      await waitFor(
        async () => {
          const r = await runCli(['qoe', 'misses', '--json', '--by', 'title', '--last', '30m', '--url', state.aggregatorUrl], cliEnv());
          if (r.code !== 0) throw new Error(`ocdn qoe misses exited ${r.code}: ${r.stderr}`);
          report = JSON.parse(r.stdout) as MissReport;
          row = report.rows.find((x) => x.value === title);
          return classified(row) + report.unmatchedAccessBytes >= received;
        },
        { timeoutMs: 90_000, intervalMs: 1_000, what: `the aggregator to classify the ${received} bytes players read of ${title}` },
      ).catch((err: Error) => {
        throw new Error(`${err.message}; last report ${JSON.stringify(report)}`);
      });
      return row!;
    };

    const cold = await play();
    expect(cold.summary.startFailures).toBe(0);
    const before = await settled();
    expect(before.contentMissBytes).toBeGreaterThan(0);

    // Cold again at every edge: purged, and steering's inventories (from heartbeats) say so.
    for (const c of state.components.filter((x) => x.kind === 'edge')) {
      const res = await fetch(`${c.url}/admin/purge`, {
        method: 'POST',
        headers: { authorization: `Bearer ${state.adminToken}`, 'content-type': 'application/json' },
        body: JSON.stringify({ prefix: `vod/${title}/` }),
      });
      expect(res.status).toBe(200);
    }
    await waitFor(async () => (await observeEdges(state.steeringUrl, [title])).every((e) => !e.holds.has(title)), {
      timeoutMs: 20_000,
      what: `no edge holding ${title} in steering's inventory`,
    });

    const controller = new FillController({
      steeringUrl: state.steeringUrl,
      aggregatorUrl: state.aggregatorUrl,
      catalog: async () => catalog,
      adminToken: state.adminToken,
      top: 1,
      copies: [3],
      window: parseWindow('always'),
      budgetBytes: 10e9,
      bytesPerSecond: 1e9,
      recentMs: 30 * 60_000,
      deadlineMs: 60_000,
    });
    const cycle = await controller.cycle();
    // The title picked is the one with demand and content misses, on every edge of the site.
    expect(cycle.left).toEqual([]);
    expect(new Set(cycle.done.map((d) => d.title))).toEqual(new Set([title]));
    expect(cycle.done).toHaveLength(3);
    expect(cycle.contentMissBytesBefore).toBe(before.contentMissBytes);

    const readCold = received;
    const warm = await play();
    expect(warm.summary.startFailures).toBe(0);
    const after = await settled();
    const coldContentMiss = before.contentMissBytes;
    const warmContentMiss = after.contentMissBytes - before.contentMissBytes;
    const warmLocalHit = after.localHitBytes - before.localHitBytes;
    process.stdout.write(
      `fill effect on ${title}: cold run ${readCold} bytes read, ${coldContentMiss} content-miss, ${before.localHitBytes} local-hit; ` +
        `filled ${cycle.bytesFilled} bytes on ${cycle.done.length} edges; ` +
        `same players after the fill: ${received - readCold} bytes read, ${warmContentMiss} content-miss, ${warmLocalHit} local-hit\n`,
    );
    expect(warmLocalHit).toBeGreaterThan(0);
    expect(warmContentMiss).toBeLessThan(coldContentMiss / 10);
  }, 300_000);
});

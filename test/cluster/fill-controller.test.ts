import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Catalog, FillJobList } from '../../common/contracts.ts';
import { waitFor } from '../../common/http.ts';
import { startEdge, type Edge } from '../../edge/server.ts';
import { FillController, type FillControllerOptions, observeEdges, serveFillController } from '../../scripts/fill-controller.ts';
import { parseWindow, placeInSite, titleBytes } from '../../scripts/fill-plan.ts';
import { type Steering, startSteering } from '../../steering/server.ts';
import { BUCKET, bytes, GatedReader, startOrigin, type TestOrigin } from '../edge/helpers.ts';
import { TEST_EDGE_KEY, testTitle } from '../steering/helpers.ts';

const ADMIN = 'fill-controller-admin';
const CAP = 150_000; // bytes/s: every edge's --fill-rate-cap
const SEG = 20_000;
const TITLES = ['t1', 't2', 't3', 't4', 't5'];

/** Each title: master → one rendition → 3 segments of SEG bytes; the catalog's estimate (peak bandwidth × duration) is above that. */
const catalog: Catalog = {
  version: 1,
  generatedAt: new Date(0).toISOString(),
  ladder: 'test',
  titles: TITLES.map((id, i) => ({
    ...testTitle(id, i + 1),
    durationSec: 12,
    segments: 3,
    renditions: [{ name: '730k', bandwidth: 45_000, averageBandwidth: 40_000, width: 640, height: 360, codecs: 'avc1.64001e' }],
  })),
};

/** Per-edge admin fill jobs as the edge lists them. */
async function jobsOf(edge: Edge): Promise<FillJobList['jobs']> {
  const res = await fetch(`${edge.url}/admin/fill`, { headers: { authorization: `Bearer ${ADMIN}` } });
  return ((await res.json()) as FillJobList).jobs;
}

/** Bytes an edge's fills pulled over the span from its first job's start to its last job's end. */
function fillRate(jobs: FillJobList['jobs']): { bytes: number; rate: number } {
  const done = jobs.filter((j) => j.finishedAt !== undefined && j.bytesFetched > 0);
  const bytes = done.reduce((s, j) => s + j.bytesFetched, 0);
  const from = Math.min(...done.map((j) => Date.parse(j.startedAt)));
  const to = Math.max(...done.map((j) => Date.parse(j.finishedAt!)));
  return { bytes, rate: bytes / Math.max(0.001, (to - from) / 1000) };
}

describe('fill controller against real edges, steering and S3', () => {
  let origin: TestOrigin;
  let steering: Steering;
  const edges: { edge: Edge; reader: GatedReader }[] = [];
  const byId = (id: string) => edges.find((e) => e.edge.id === id)!;

  beforeAll(async () => {
    origin = await startOrigin();
    for (const [i, t] of TITLES.entries()) {
      await origin.put(`vod/${t}/master.m3u8`, '#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=45000\n730k/index.m3u8\n');
      const segs = [0, 1, 2].map((n) => `#EXTINF:4.0,\nseg-0000${n}.ts\n`).join('');
      await origin.put(`vod/${t}/730k/index.m3u8`, `#EXTM3U\n#EXT-X-TARGETDURATION:4\n${segs}#EXT-X-ENDLIST\n`);
      for (const n of [0, 1, 2]) await origin.put(`vod/${t}/730k/seg-0000${n}.ts`, bytes(SEG, i * 10 + n + 1));
    }
    steering = await startSteering({
      edgeKey: TEST_EDGE_KEY,
      port: 0,
      tokenSecret: null,
      catalog,
      registry: { probeIntervalMs: 0, rise: 1, heartbeatIntervalMs: 100 },
    });
    for (const id of ['edge-1', 'edge-2', 'edge-3']) {
      // Every edge its own S3 reader: its origin GETs are counted at the S3 side of that edge.
      const reader = new GatedReader({ client: origin.client, bucket: BUCKET, timeoutMs: 5_000, retries: 0 });
      reader.release();
      const edge = await startEdge({
        edgeKey: TEST_EDGE_KEY,
        id,
        port: 0,
        region: 'site-a',
        capacityBytes: 10_000_000,
        origin: reader,
        tokenSecret: null,
        adminToken: ADMIN,
        steeringUrl: steering.url,
        heartbeatIntervalMs: 100,
        playlistTtlMs: 600_000,
        fillRateCap: CAP,
      });
      edges.push({ edge, reader });
    }
    await waitFor(() => steering.registry.counts().up === 3, { timeoutMs: 10_000, what: '3 edges up at steering' });
  });

  afterAll(async () => {
    await Promise.all(edges.map((e) => e.edge.close()));
    await steering?.close();
    await origin?.close();
  });

  const controller = (over: Partial<FillControllerOptions>) =>
    new FillController({
      steeringUrl: steering.url,
      catalog: async () => catalog,
      adminToken: ADMIN,
      top: 1,
      copies: [1],
      window: parseWindow('always'),
      budgetBytes: 1e9,
      bytesPerSecond: 1e9,
      recentMs: 60_000,
      deadlineMs: 20_000,
      ...over,
    });

  /** Waits until steering's inventories show `title` on exactly `ids`. */
  const inventoryShows = (title: string, ids: string[]) =>
    waitFor(
      async () => {
        const rows = await observeEdges(steering.url, [title]);
        const holding = rows.filter((r) => r.holds.has(title)).map((r) => r.id);
        return holding.sort().join() === [...ids].sort().join();
      },
      { timeoutMs: 10_000, what: `${title} on ${ids.join(', ')} in steering's inventory` },
    );

  it('outside the window nothing moves, though the plan says what would', async () => {
    const now = new Date();
    const hh = (h: number) => String((now.getHours() + h) % 24).padStart(2, '0');
    const closed = controller({ window: parseWindow(`${hh(2)}:00-${hh(3)}:00`), top: 5, copies: [3] });
    const r = await closed.cycle();
    expect(r.windowOpen).toBe(false);
    expect(r.plan.length).toBe(15);
    expect(r.admitted).toEqual([]);
    expect(r.done).toEqual([]);
    for (const { edge, reader } of edges) {
      expect(await jobsOf(edge)).toEqual([]);
      expect(reader.calls).toBe(0);
    }
  });

  it('a title held by a site peer fills from the peer: 0 new origin GETs at the filling edges, and the peer does not go upstream either', async () => {
    const order = placeInSite(
      't1',
      edges.map((e) => ({ id: e.edge.id, url: e.edge.url, region: 'site-a', healthy: true, holds: new Set<string>() })),
    ).map((e) => e.id);
    // The title sits on the edge steering ranks last for it (a copy placed by an earlier plan).
    const holder = byId(order[2]!);
    const warm = await fetch(`${holder.edge.url}/admin/fill`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ title: 't1', wait: true }),
    });
    expect(warm.status).toBe(200);
    await inventoryShows('t1', [holder.edge.id]);
    const before = new Map(edges.map((e) => [e.edge.id, e.reader.calls]));
    expect(before.get(holder.edge.id)).toBe(5);

    const r = await controller({ top: 1, copies: [3] }).cycle();
    expect(r.windowOpen).toBe(true);
    expect(r.held).toBe(1);
    expect(r.plan.map((f) => [f.edgeId, f.source.kind === 'peer' ? f.source.edgeId : f.source.kind]).sort()).toEqual(
      [
        [order[0], holder.edge.id],
        [order[1], holder.edge.id],
      ].sort(),
    );
    expect(r.left).toEqual([]);
    expect(r.done).toHaveLength(2);
    for (const d of r.done) {
      expect(d.fromUpstream ?? 0).toBe(0);
      expect(d.bytesFetched).toBeGreaterThanOrEqual(3 * SEG);
    }
    for (const { edge, reader } of edges) {
      expect({ edge: edge.id, gets: reader.calls }).toEqual({ edge: edge.id, gets: before.get(edge.id) });
      expect(edge.cache.has('/vod/t1/730k/seg-00002.ts')).toBe(true);
    }
    await inventoryShows(
      't1',
      edges.map((e) => e.edge.id),
    );
    // Filled everywhere it should be: the next cycle has nothing to do.
    const again = await controller({ top: 1, copies: [3] }).cycle();
    expect(again.plan).toEqual([]);
    expect(again.held).toBe(3);
  });

  it('a title held by nobody fills from S3 at the edge steering sends players to first', async () => {
    const before = new Map(edges.map((e) => [e.edge.id, e.reader.calls]));
    const r = await controller({ top: 2, copies: [3, 1] }).cycle();
    expect(r.plan).toHaveLength(1);
    const [f] = r.plan;
    expect(f).toMatchObject({ title: 't2', source: { kind: 's3' }, copies: 1, copy: 0 });
    const first = placeInSite(
      't2',
      edges.map((e) => ({ id: e.edge.id, url: e.edge.url, region: 'site-a', healthy: true, holds: new Set<string>() })),
    )[0]!.id;
    expect(f!.edgeId).toBe(first);
    expect(r.done).toHaveLength(1);
    // master, media playlist and 3 segments from S3, at that edge only.
    for (const { edge, reader } of edges) expect(reader.calls - before.get(edge.id)!).toBe(edge.id === first ? 5 : 0);
    expect(byId(first).edge.cache.has('/vod/t2/730k/seg-00000.ts')).toBe(true);
    expect(r.done[0]!.bytesFetched).toBeGreaterThanOrEqual(3 * SEG);
    await inventoryShows('t2', [first]);
  });

  it("inside the window the budget bounds the window's bytes across cycles, and each edge's fills stay under its cap", async () => {
    const one = titleBytes(catalog.titles[0]!);
    const ctl = controller({ top: 5, copies: [1], budgetBytes: Math.floor(one * 1.5) });
    const first = await ctl.cycle();
    expect(first.plan.map((f) => f.title)).toEqual(['t3', 't4', 't5']);
    expect(first.admitted.map((f) => f.title)).toEqual(['t3']);
    expect(first.deferred.map((f) => f.title)).toEqual(['t4', 't5']);
    expect(first.bytesFilled).toBeGreaterThan(0);
    expect(first.bytesFilled).toBeLessThanOrEqual(one * 1.5);
    await inventoryShows('t3', [first.admitted[0]!.edgeId]);
    // Same window: what is left of the budget admits no whole title.
    const second = await ctl.cycle();
    expect(second.admitted).toEqual([]);
    expect(second.budgetLeft).toBeLessThan(one);
    expect(first.bytesFilled + second.bytesFilled).toBeLessThanOrEqual(one * 1.5);
    const metrics = await ctl.registry.metrics();
    expect(metrics).toMatch(/ocdn_fill_jobs_total\{outcome="deferred",source="s3"\} 4/);

    // Many fills at once on one edge (each asking for far more than the cap) share the edge's cap.
    const target = byId('edge-1').edge;
    await Promise.all(
      ['t4', 't5'].map((title) =>
        fetch(`${target.url}/admin/fill`, {
          method: 'POST',
          headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
          body: JSON.stringify({ title, bytesPerSecond: 1e9 }),
        }),
      ),
    );
    await waitFor(async () => (await jobsOf(target)).every((j) => j.state !== 'running'), { timeoutMs: 20_000, what: 'the fills done' });
    for (const { edge } of edges) {
      const jobs = await jobsOf(edge);
      if (!jobs.some((j) => j.bytesFetched > 0)) continue;
      const { bytes: b, rate } = fillRate(jobs);
      expect({ edge: edge.id, over: rate > CAP * 1.01, bytes: b }).toMatchObject({ edge: edge.id, over: false });
    }
    const concurrent = fillRate((await jobsOf(target)).filter((j) => j.title === 't4' || j.title === 't5'));
    expect(concurrent.bytes).toBeGreaterThanOrEqual(6 * SEG);
    expect(concurrent.rate).toBeLessThanOrEqual(CAP * 1.01);
  });

  it('long-running mode: cycles on a timer, /healthz and /metrics, stops cleanly', async () => {
    const ctl = controller({ top: 1, copies: [3] });
    const svc = await serveFillController(ctl, { everyMs: 50, port: 0 });
    try {
      await waitFor(() => svc.cycles() >= 2, { timeoutMs: 10_000, what: 'two cycles' });
      const health = await fetch(`${svc.url}/healthz`);
      expect(health.status).toBe(200);
      expect(((await health.json()) as { last: { ok: boolean } }).last.ok).toBe(true);
      const text = await (await fetch(`${svc.url}/metrics`)).text();
      expect(text).toMatch(/ocdn_fill_cycles_total\{window="open"\} [1-9]/);
    } finally {
      await svc.close();
    }
    await expect(fetch(`${svc.url}/healthz`)).rejects.toThrow();
  });
});

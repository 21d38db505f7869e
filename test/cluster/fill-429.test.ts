import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../common/http.ts';
import { startEdge, type Edge } from '../../edge/server.ts';
import { type FillJob, runFillPlan } from '../../scripts/fill.ts';
import { BUCKET, bytes, GatedReader, startOrigin, type TestOrigin } from '../edge/helpers.ts';
import { TEST_EDGE_KEY } from '../steering/helpers.ts';

const ADMIN = 'fill-admin-token';
const TITLES = Array.from({ length: 6 }, (_, i) => `t${i + 1}`);

/**
 * An edge whose origin reads wait at a gate: its fills stay running until the test opens it, so
 * the edge's limit of running fills (4) is reached for sure and it answers 429 + Retry-After.
 */
describe('fill respects the edge 429 and Retry-After', () => {
  let origin: TestOrigin;
  const edges: Edge[] = [];

  beforeAll(async () => {
    origin = await startOrigin();
    for (const t of TITLES) {
      await origin.put(`vod/${t}/master.m3u8`, '#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000\n730k/index.m3u8\n');
      await origin.put(`vod/${t}/730k/index.m3u8`, '#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.0,\nseg-00000.ts\n#EXT-X-ENDLIST\n');
      await origin.put(`vod/${t}/730k/seg-00000.ts`, bytes(2_000, t.charCodeAt(1)));
    }
  });

  afterAll(async () => {
    await Promise.all(edges.map((e) => e.close()));
    await origin?.close();
  });

  const gatedEdge = async (id: string) => {
    const reader = new GatedReader({ client: origin.client, bucket: BUCKET, timeoutMs: 30_000, retries: 0 });
    const edge = await startEdge({
      edgeKey: TEST_EDGE_KEY,
      id,
      port: 0,
      region: 'r',
      capacityBytes: 10_000_000,
      origin: reader,
      tokenSecret: null,
      adminToken: ADMIN,
    });
    edges.push(edge);
    const jobs: FillJob[] = TITLES.map((title, i) => ({ title, why: `catalog rank ${i + 1}`, edgeId: id, edgeUrl: edge.url }));
    return { reader, edge, jobs };
  };

  it('every title of the plan gets filled, the ones turned away with 429 after Retry-After', { timeout: 60_000 }, async () => {
    const { reader, edge, jobs } = await gatedEdge('edge-fill-a');
    const retries: { title: string; err: string; delayMs: number }[] = [];
    const running = runFillPlan(jobs, {
      adminToken: ADMIN,
      bytesPerSecond: 1e9,
      deadlineMs: 45_000,
      onRetry: (job, err, delayMs) => retries.push({ title: job.title, err: (err as Error).message, delayMs }),
    });
    await waitFor(() => retries.length > 0, { timeoutMs: 10_000, what: 'a job turned away' });
    expect(retries[0]).toMatchObject({ title: 't5' });
    expect(retries[0]!.err).toMatch(/^edge answered 429: E_TOO_MANY: too many fills running/);
    // Retry-After: 5 is waited out, not cut short by the backoff.
    expect(retries[0]!.delayMs).toBeGreaterThanOrEqual(5_000);
    reader.release();
    const t0 = Date.now();
    const r = await running;
    expect(Date.now() - t0).toBeGreaterThan(3_000);
    expect(r.left).toEqual([]);
    expect(r.done.map((d) => d.title)).toEqual(TITLES);
    expect(r.done.every((d) => d.status === 202)).toBe(true);
    expect(r.done.slice(0, 4).every((d) => d.attempts === 1)).toBe(true);
    expect(r.done.find((d) => d.title === 't5')!.attempts).toBeGreaterThanOrEqual(2);
    // They did run: the edge lists one finished job per title.
    const finished = await waitFor(
      async () => {
        const res = await fetch(`${edge.url}/admin/fill`, { headers: { authorization: `Bearer ${ADMIN}` } });
        const { jobs: list } = (await res.json()) as { jobs: { title: string; state: string; done: number }[] };
        return list.length === TITLES.length && list.every((j) => j.state === 'done') && list;
      },
      { timeoutMs: 10_000, what: 'every fill job done' },
    );
    expect(finished.map((j) => j.title).sort()).toEqual(TITLES);
    expect(finished.every((j) => j.done === 3)).toBe(true);
  });

  it('a deadline too short for the plan reports what was left and why, without waiting past it', { timeout: 30_000 }, async () => {
    const { reader, jobs } = await gatedEdge('edge-fill-b');
    const t0 = Date.now();
    const r = await runFillPlan(jobs, { adminToken: ADMIN, bytesPerSecond: 1e9, deadlineMs: 2_000 });
    // Retry-After (5 s) is past the deadline: no point waiting for it.
    expect(Date.now() - t0).toBeLessThan(2_000);
    expect(r.done.map((d) => d.title)).toEqual(['t1', 't2', 't3', 't4']);
    expect(r.left.map((d) => d.title)).toEqual(['t5', 't6']);
    for (const l of r.left) {
      expect(l).toMatchObject({ edgeId: 'edge-fill-b', status: 429, attempts: 1 });
      expect(l.reason).toMatch(/edge answered 429: E_TOO_MANY: too many fills running .*still so at the deadline/);
    }
    reader.release();
  });

  it('a refusal that retrying cannot fix (wrong token) is left at once', async () => {
    const { reader, jobs } = await gatedEdge('edge-fill-c');
    reader.release();
    const r = await runFillPlan(jobs.slice(0, 2), { adminToken: 'wrong', bytesPerSecond: 1e9, deadlineMs: 10_000 });
    expect(r.done).toEqual([]);
    expect(r.left.map((l) => [l.title, l.status, l.attempts])).toEqual([
      ['t1', 401, 1],
      ['t2', 401, 1],
    ]);
    expect(r.left[0]!.reason).not.toMatch(/deadline/);
  });
});

/**
 * `ocdn lab` end to end through the real CLI: reproducible to the byte, the offline bound above
 * every online policy, the policies telling apart, and a report page that loads nothing.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { beladyStats } from '../../lab/belady.ts';
import type { LabResult } from '../../lab/experiment.ts';
import { cliEnv, runCli } from '../cli-run.ts';

/** Small enough to run in seconds, big enough that 5 % of the catalog forces evictions. */
const WORKLOAD = ['--titles', '60', '--sessions', '200', '--edges', '2', '--sites', '1', '--arrivals', '300s'];
const ARGS = ['lab', '--policies', 'lru,sieve,s3fifo', '--capacities', '5%', '--steering', 'hrw-bounded', '--seed', '7', ...WORKLOAD, '--json'];

describe('ocdn lab', () => {
  let first: { code: number | null; stdout: string; stderr: string };
  let second: { code: number | null; stdout: string; stderr: string };
  let result: LabResult;
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ocdn-lab-'));
    // Two separate processes at once: nothing shared but the arguments.
    [first, second] = await Promise.all([runCli(ARGS, cliEnv()), runCli(ARGS, cliEnv())]);
    expect(first.code, first.stderr).toBe(0);
    result = JSON.parse(first.stdout) as LabResult;
  }, 60_000);

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('gives byte-identical JSON for the same arguments', () => {
    expect(second.code, second.stderr).toBe(0);
    expect(second.stdout).toBe(first.stdout);
  });

  it('has a row per policy plus the belady bound, with the documented fields in range', () => {
    expect(result.rows.map((r) => r.cachePolicy)).toEqual(['lru', 'sieve', 's3fifo', 'belady']);
    for (const r of result.rows) {
      expect(r).toMatchObject({ steering: 'hrw-bounded', capacityFraction: 0.05, abr: 'throughput' });
      for (const k of ['byteHitRatio', 'objectHitRatio', 'originBytesRatio'] as const) {
        expect(r[k], k).toBeGreaterThanOrEqual(0);
        expect(r[k], k).toBeLessThanOrEqual(1);
      }
      // Every served byte is a hit or came from the origin once.
      expect(r.byteHitRatio + r.originBytesRatio).toBeCloseTo(1, 5);
      expect(r.requests).toBeGreaterThan(0);
      expect(r.perEdge).toHaveLength(2);
      expect(r.perEdge.reduce((a, e) => a + e.requests, 0)).toBe(r.requests);
      for (const e of r.perEdge) {
        expect(e.byteHitRatio).toBeGreaterThanOrEqual(0);
        expect(e.byteHitRatio).toBeLessThanOrEqual(1);
        expect(e.peakLoadRps).toBeGreaterThanOrEqual(e.meanLoadRps);
      }
      if (r.cachePolicy === 'belady') {
        expect(r.vstP95Ms).toBeNull();
      } else {
        expect(r.vstP95Ms).toBeGreaterThan(0);
        expect(r.rebufferRatio).toBeGreaterThanOrEqual(0);
        expect(r.rebufferRatio).toBeLessThanOrEqual(1);
        expect(r.avgBitrate).toBeGreaterThan(0);
        expect(r.sessions).toBe(200);
      }
    }
    expect(result.params).toMatchObject({ seed: 7, titles: 60, sessions: 200, edges: 2 });
    expect(result.params.catalogBytes).toBeGreaterThan(0);
  });

  it("puts belady's byte hit ratio at or above every policy's, and the policies differ", () => {
    const belady = result.rows.find((r) => r.cachePolicy === 'belady')!;
    const online = result.rows.filter((r) => r.cachePolicy !== 'belady');
    for (const r of online) expect(belady.byteHitRatio, r.cachePolicy).toBeGreaterThanOrEqual(r.byteHitRatio);
    // Each policy against the bound on its own request stream, which is what it could have had.
    for (const r of online) expect(r.beladyByteHitRatio, r.cachePolicy).toBeGreaterThanOrEqual(r.byteHitRatio);
    expect(new Set(online.map((r) => r.byteHitRatio)).size).toBeGreaterThan(1);
  });

  it('--report writes a self-contained page with the chart library inlined', async () => {
    const file = join(dir, 'lab.html');
    const r = await runCli([...ARGS.filter((a) => a !== '--json'), '--capacities', '2%,5%', '--policies', 'lru', '--report', file], cliEnv());
    expect(r.code, r.stderr).toBe(0);
    const html = await readFile(file, 'utf8');
    expect(html).toContain('uPlot');
    expect(html).toContain('.uplot'); // its stylesheet
    expect(html).not.toMatch(/<script[^>]*\bsrc\s*=\s*["']?https?:/i);
    expect(html).not.toMatch(/<link[^>]*\bhref\s*=\s*["']?https?:/i);
    expect(html).toContain('belady');
  }, 60_000);

  it('rejects unknown policies with exit 2', async () => {
    const r = await runCli(['lab', '--policies', 'lru,fifo'], cliEnv());
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--policies: "fifo"/);
  });
});

describe('belady', () => {
  it('keeps what is needed soonest and bypasses what is never asked again', () => {
    // a b a c a b, room for two: c is never asked again, so it does not push b out and b hits at the end.
    const keys = [0, 1, 0, 2, 0, 1];
    expect(
      beladyStats(
        keys,
        keys.map(() => 10),
        20,
        20,
      ),
    ).toEqual({ requests: 6, hits: 3, bytes: 60, hitBytes: 30 });
    // a b c a b c, room for two: c (wanted last) bypasses; a and b hit once each.
    const cyc = [0, 1, 2, 0, 1, 2];
    expect(
      beladyStats(
        cyc,
        cyc.map(() => 10),
        20,
        20,
      ).hits,
    ).toBe(2);
  });

  it('never admits an object larger than maxEntryBytes', () => {
    const s = beladyStats([0, 0, 0], [50, 50, 50], 100, 25);
    expect(s.hits).toBe(0);
  });
});

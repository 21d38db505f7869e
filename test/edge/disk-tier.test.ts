/**
 * The disk tier: an edge process filled, SIGKILLed and started again on the same directory serves
 * every object it held as a hit with no origin fetch and the bytes S3 holds; a file torn behind its
 * back is detected on start, deleted, refetched and never served. In process: objects pushed out
 * of RAM are promoted back from disk, and a purge reaches the disk too.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../common/http.ts';
import { readMetric } from '../../common/metrics.ts';
import { startEdge, type Edge } from '../../edge/server.ts';
import { BIN, ROOT, cliEnv } from '../cli-run.ts';
import { bytes, get, metric, sha256, startOrigin, type TestOrigin } from './helpers.ts';

const N = 12;
const keyOf = (i: number) => `/vod/warm/r/seg-${String(i).padStart(5, '0')}.ts`;
const fileOf = (key: string) => `${createHash('sha256').update(key).digest('hex')}.obj`;

/** `ocdn edge serve` as its own process; resolves with its URL once it listens. */
async function spawnEdge(origin: TestOrigin, diskDir: string): Promise<{ child: ChildProcess; url: string; exited: Promise<unknown> }> {
  const child = spawn(
    process.execPath,
    [BIN, 'edge', 'serve', '--id', 'edge-disk', '--port', '0', '--capacity', '1MB', '--no-tokens', '--s3-endpoint', origin.s3.endpoint].concat([
      '--disk-dir',
      diskDir,
      '--disk-capacity',
      '64MB',
    ]),
    {
      cwd: ROOT,
      env: cliEnv({ logLevel: 'info', unset: ['OCDN_S3_ENDPOINT', 'OCDN_TOKEN_SECRET', 'OCDN_STEERING_URL', 'OCDN_EDGE_KEY'] }),
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise((r) => child.on('close', r));
  const url = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const rec = JSON.parse(line) as { msg?: string; url?: string };
      if (rec.msg === 'edge listening' && rec.url) resolve(rec.url);
    });
    child.on('close', (code) => reject(new Error(`edge exited ${code} before listening: ${stderr}`)));
  });
  return { child, url, exited };
}

const scrape = async (url: string, name: string, labels: Record<string, string> = {}) =>
  readMetric((await get(`${url}/metrics`)).body.toString(), name, labels);

describe('edge disk tier', () => {
  let origin: TestOrigin;
  let dir: string;
  const children: ChildProcess[] = [];
  const edges: Edge[] = [];
  const bodies = new Map<string, Buffer>();

  beforeAll(async () => {
    origin = await startOrigin();
    dir = await mkdtemp(join(tmpdir(), 'ocdn-disk-'));
    for (let i = 0; i < N; i++) bodies.set(keyOf(i), await origin.put(keyOf(i).slice(1), bytes(60_000 + i * 7_000, 300 + i)));
  });

  afterAll(async () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    await Promise.all(edges.map((e) => e.close()));
    await origin?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('survives SIGKILL: every object held comes back as a hit with 0 origin fetches; a torn file is refetched, never served', async () => {
    const diskDir = join(dir, 'warm');
    const first = await spawnEdge(origin, diskDir);
    children.push(first.child);
    for (const [key, body] of bodies) {
      const r = await get(`${first.url}${key}`);
      expect(r.status).toBe(200);
      expect(r.body.equals(body)).toBe(true);
    }
    await waitFor(async () => (await scrape(first.url, 'ocdn_edge_disk_items')) === N, { timeoutMs: 20_000, what: `all ${N} objects written to disk` });
    first.child.kill('SIGKILL');
    await first.exited;

    // Tear one file behind the edge's back, as a crash in the middle of a disk write could.
    const torn = keyOf(3);
    const tornFile = join(diskDir, fileOf(torn));
    await truncate(tornFile, Math.floor((await stat(tornFile)).size / 2));
    expect((await readdir(diskDir)).filter((f) => f.endsWith('.obj'))).toHaveLength(N);
    // And a write that never reached its rename.
    await writeFile(join(diskDir, `${fileOf(keyOf(5))}.tmp-dead`), 'partial');

    const second = await spawnEdge(origin, diskDir);
    children.push(second.child);
    expect(await scrape(second.url, 'ocdn_edge_disk_torn_total')).toBe(1);
    expect(await scrape(second.url, 'ocdn_edge_disk_items')).toBe(N - 1);
    expect((await readdir(diskDir)).filter((f) => f.includes('.tmp-'))).toEqual([]);
    for (const [key, body] of bodies) {
      const r = await get(`${second.url}${key}`);
      expect(r.status, key).toBe(200);
      expect(sha256(r.body), key).toBe(sha256(body));
      if (key === torn) {
        expect(r.headers['x-cache']).toBe('MISS');
      } else {
        expect(r.headers['x-cache'], key).toBe('HIT');
        expect(r.headers['cache-status'], key).toBe('ocdn-edge-disk; hit; detail=disk');
      }
    }
    // Only the torn object went to the origin.
    expect(await scrape(second.url, 'ocdn_edge_origin_fetches_total', { result: 'ok' })).toBe(1);
    // Promoted: the next request is a plain RAM hit.
    expect((await get(`${second.url}${keyOf(N - 1)}`)).headers['cache-status']).toBe('ocdn-edge-disk; hit');
    await waitFor(async () => (await scrape(second.url, 'ocdn_edge_disk_items')) === N, { timeoutMs: 20_000, what: 'the refetched object back on disk' });
    second.child.kill('SIGTERM');
    await second.exited;
  }, 120_000);

  it('promotes objects pushed out of RAM back from disk, without the origin, and a purge reaches the disk', async () => {
    const edge = await startEdge({
      id: 'edge-tiers',
      region: 'r',
      capacityBytes: 600_000,
      origin: origin.reader,
      tokenSecret: null,
      disk: { dir: join(dir, 'tiers'), capacityBytes: 16_000_000 },
    });
    edges.push(edge);
    for (const key of bodies.keys()) expect((await get(`${edge.url}${key}`)).status).toBe(200);
    await edge.disk!.idle();
    expect(edge.disk!.items).toBe(N);
    const fetched = await metric(edge, 'ocdn_edge_origin_fetches_total', { result: 'ok' });
    expect(fetched).toBe(N);
    // RAM holds ~600 KB of ~1.2 MB: the first objects are long gone from it.
    expect(edge.cache.has(keyOf(0))).toBe(false);
    const r = await get(`${edge.url}${keyOf(0)}`);
    expect(r.headers['cache-status']).toBe('ocdn-edge-tiers; hit; detail=disk');
    expect(r.body.equals(bodies.get(keyOf(0))!)).toBe(true);
    expect(await metric(edge, 'ocdn_edge_origin_fetches_total', { result: 'ok' })).toBe(N);
    expect(await metric(edge, 'ocdn_edge_disk_hits_total')).toBe(1);
    expect(edge.cache.titles()).toEqual(['warm']);

    expect(edge.cache.purge('/vod/warm/', false)).toBeGreaterThanOrEqual(N);
    expect(edge.disk!.items).toBe(0);
    expect((await get(`${edge.url}${keyOf(0)}`)).headers['x-cache']).toBe('MISS');
  });
});

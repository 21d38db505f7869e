/**
 * Edge storage benchmark, two parts measured in one run:
 *
 * 1. Memory under a flood of distinct misses: an `ocdn edge serve` process (RAM capacity
 *    --capacity) gets --misses concurrent GETs for distinct objects of --object bytes, and its RSS
 *    is sampled from /proc every 10 ms. Run once with the default upstream concurrency cap and
 *    once with the cap lifted (the edge before the cap), so the figure is a ratio in one run.
 * 2. The disk-hit path against the RAM-hit path: wrk on one 100 KB object served from RAM, then
 *    from the disk tier (RAM too small to keep it, so every request reads the disk tier), rounds
 *    interleaved so a noisy neighbour hits both alike.
 *
 *   npm run bench:storage -- [--misses 500] [--warm 100] [--object 256KB] [--capacity 16MB] [--rounds 3] [--duration 2]
 *
 * Before the idle RSS is read, the edge serves a flood of --warm other distinct misses the same way:
 * what a first flood costs once (compiled code, the heap's young generation grown to its working
 * size, the S3 client's sockets) is then in the idle figure, and the growth is what the flood holds.
 * Needs wrk for part 2 (apt-get install -y wrk).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { Agent, request } from 'undici';
import { DEFAULT_UPSTREAM_CONCURRENCY } from '../../edge/defaults.ts';
import { startEdge } from '../../edge/server.ts';
import { createLogger } from '../../common/log.ts';
import { formatBytes, parseBytes } from '../../common/units.ts';
import { renderTable } from '../../common/table.ts';
import { OriginReader } from '../../origin/reader.ts';
import { EMBEDDED_CREDENTIALS } from '../../origin/s3-config.ts';
import { createS3Client } from '../../origin/s3-client.ts';
import { startEmbeddedS3 } from '../../origin/s3-server.ts';

const BIN = join(import.meta.dirname, '..', '..', 'bin', 'ocdn.js');
const BUCKET = 'ocdn-media';

interface Args {
  misses: number;
  warm: number;
  object: number;
  capacity: number;
  rounds: number;
  duration: number;
  only: 'memory' | 'disk' | undefined;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { misses: 500, warm: 100, object: parseBytes('256KB'), capacity: parseBytes('16MB'), rounds: 3, duration: 2, only: undefined };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!;
    const v = argv[++i];
    if (k === '--misses') a.misses = Number(v);
    else if (k === '--warm') a.warm = Number(v);
    else if (k === '--object') a.object = parseBytes(String(v));
    else if (k === '--capacity') a.capacity = parseBytes(String(v));
    else if (k === '--rounds') a.rounds = Number(v);
    else if (k === '--duration') a.duration = Number(v);
    else if (k === '--only' && (v === 'memory' || v === 'disk')) a.only = v;
    else throw new Error(`unknown argument ${k} (see the header of scripts/bench/edge-storage.ts)`);
  }
  return a;
}

async function rssOf(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024;
}

async function spawnEdge(s3Endpoint: string, a: Args, cap: number): Promise<{ child: ChildProcess; url: string }> {
  const args = ['edge', 'serve', '--id', 'edge-bench', '--port', '0', '--no-tokens', '--capacity', String(a.capacity), '--s3-endpoint', s3Endpoint];
  args.push('--upstream-concurrency', String(cap), '--origin-timeout', '60s');
  const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, OCDN_LOG_LEVEL: 'info' }, stdio: ['ignore', 'pipe', 'inherit'] });
  const url = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      try {
        const rec = JSON.parse(line) as { msg?: string; url?: string };
        if (rec.msg === 'edge listening' && rec.url) resolve(rec.url);
      } catch {
        // not a log line
      }
    });
    child.on('close', (code) => reject(new Error(`edge exited ${code}`)));
  });
  return { child, url };
}

async function missFlood(s3Endpoint: string, a: Args, cap: number, keys: string[], warmKeys: string[]) {
  const { child, url } = await spawnEdge(s3Endpoint, a, cap);
  const agent = new Agent({ connections: a.misses + 10, keepAliveTimeout: 5_000 });
  try {
    // Warm the process with a flood of other misses, then idle RSS.
    await Promise.all(warmKeys.map(async (k) => (await request(`${url}/${k}`, { dispatcher: agent })).body.arrayBuffer()));
    const idle = await rssOf(child.pid!);
    let peak = idle;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        peak = Math.max(peak, await rssOf(child.pid!).catch(() => 0));
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    const t0 = Date.now();
    const statuses = await Promise.all(
      keys.map(async (k) => {
        const r = await request(`${url}/${k}`, { dispatcher: agent });
        await r.body.arrayBuffer();
        return r.statusCode;
      }),
    );
    const ms = Date.now() - t0;
    sampling = false;
    await sampler;
    return { cap, idle, peak, grew: peak - idle, ms, ok: statuses.filter((s) => s === 200).length };
  } finally {
    await agent.close();
    child.kill('SIGTERM');
    await new Promise((r) => child.once('close', r));
  }
}

/** wrk as a child, asynchronously: the edges it drives live in this process's event loop. */
function wrk(url: string, duration: number): Promise<{ rps: number }> {
  return new Promise((resolve, reject) => {
    const p = spawn('wrk', ['-t1', '-c16', `-d${duration}s`, url], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (out += d.toString()));
    p.on('error', reject);
    p.on('close', () => {
      const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]);
      if (!Number.isFinite(rps) || /Non-2xx/.test(out)) reject(new Error(`wrk failed on ${url}: ${out}`));
      else resolve({ rps });
    });
  });
}

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  const work = await mkdtemp(join(tmpdir(), 'ocdn-bench-storage-'));
  const s3 = await startEmbeddedS3({ dir: join(work, 's3'), port: 0, bucket: BUCKET });
  const client = createS3Client({ s3Endpoint: s3.endpoint, s3Region: 'us-east-1', forcePathStyle: true, ...EMBEDDED_CREDENTIALS });
  try {
    const body = Buffer.alloc(a.object, 7);
    const keys = Array.from({ length: a.misses }, (_, i) => `vod/flood/r/seg-${String(i).padStart(5, '0')}.ts`);
    process.stderr.write(`uploading ${a.misses} objects of ${formatBytes(a.object)}…\n`);
    for (let i = 0; i < keys.length; i += 32)
      await Promise.all(keys.slice(i, i + 32).map((Key) => client.send(new PutObjectCommand({ Bucket: BUCKET, Key, Body: body }))));
    const warmKeys = Array.from({ length: Math.max(1, a.warm) }, (_, i) => `vod/warmup/r/seg-${String(i).padStart(5, '0')}.ts`);
    for (let i = 0; i < warmKeys.length; i += 32)
      await Promise.all(warmKeys.slice(i, i + 32).map((Key) => client.send(new PutObjectCommand({ Bucket: BUCKET, Key, Body: body }))));

    const floods = [];
    for (const cap of a.only === 'disk' ? [] : [DEFAULT_UPSTREAM_CONCURRENCY, 10_000]) floods.push(await missFlood(s3.endpoint, a, cap, keys, warmKeys));
    process.stdout.write(
      `\n${a.misses} concurrent distinct misses of ${formatBytes(a.object)} (${formatBytes(a.misses * a.object)} in all), RAM capacity ${formatBytes(a.capacity)}\n`,
    );
    process.stdout.write(
      `${renderTable(
        ['upstream cap', 'RSS idle', 'RSS peak', 'peak − idle', '(peak − idle) / capacity', 'all done in', '200s'],
        floods.map((f) => [
          f.cap >= 10_000 ? 'none' : String(f.cap),
          formatBytes(f.idle),
          formatBytes(f.peak),
          formatBytes(f.grew),
          (f.grew / a.capacity).toFixed(2),
          `${f.ms} ms`,
          String(f.ok),
        ]),
      )}\n`,
    );
    if (floods.length > 0) process.stdout.write(`peak growth with the cap / without: ${(floods[0]!.grew / floods[1]!.grew).toFixed(2)}\n`);
    if (a.only === 'memory') return;

    if (spawnSync('wrk', ['--version']).error) {
      process.stderr.write('part 2 needs wrk: apt-get install -y wrk\n');
      return;
    }
    const quiet = createLogger('bench', { level: 'silent' });
    const reader = new OriginReader({ client, bucket: BUCKET, timeoutMs: 10_000 });
    const key = '/vod/hit/r/seg-00000.ts';
    await client.send(new PutObjectCommand({ Bucket: BUCKET, Key: key.slice(1), Body: Buffer.alloc(100_000, 3) }));
    const ram = await startEdge({ id: 'ram', region: 'r', capacityBytes: 64 << 20, origin: reader, tokenSecret: null, log: quiet });
    // 64 KB of RAM keeps nothing over 16 KB: every request of the 100 KB object is a disk-tier hit.
    const disk = await startEdge({
      id: 'disk',
      region: 'r',
      capacityBytes: 64 << 10,
      origin: reader,
      tokenSecret: null,
      log: quiet,
      disk: { dir: join(work, 'disk'), capacityBytes: 64 << 20 },
    });
    try {
      await fetch(`${ram.url}${key}`).then((r) => r.arrayBuffer());
      await fetch(`${disk.url}${key}`).then((r) => r.arrayBuffer());
      await disk.disk!.idle();
      const check = await fetch(`${disk.url}${key}`);
      await check.arrayBuffer();
      if (!check.headers.get('cache-status')?.includes('detail=disk'))
        throw new Error(`disk edge did not answer from disk: ${check.headers.get('cache-status')}`);
      const rows: string[][] = [];
      const ratios: number[] = [];
      for (let r = 0; r < a.rounds; r++) {
        const x = await wrk(`${ram.url}${key}`, a.duration);
        const y = await wrk(`${disk.url}${key}`, a.duration);
        ratios.push(y.rps / x.rps);
        rows.push([
          String(r + 1),
          x.rps.toFixed(0),
          ((x.rps * 100_000) / 1e6).toFixed(0),
          y.rps.toFixed(0),
          ((y.rps * 100_000) / 1e6).toFixed(0),
          (y.rps / x.rps).toFixed(2),
        ]);
      }
      process.stdout.write('\n100 KB object, wrk -t1 -c16\n');
      process.stdout.write(`${renderTable(['round', 'RAM hit req/s', 'RAM MB/s', 'disk hit req/s', 'disk MB/s', 'disk / RAM'], rows)}\n`);
      const sorted = [...ratios].sort((p, q) => p - q);
      process.stdout.write(`median disk/RAM: ${sorted[Math.floor(sorted.length / 2)]!.toFixed(2)}\n`);
    } finally {
      await ram.close();
      await disk.close();
    }
  } finally {
    client.destroy();
    await s3.close();
    await rm(work, { recursive: true, force: true });
  }
}

await main();

/**
 * Edge hit-path benchmark (DESIGN.md §4): a bare node:http server returning a Buffer vs the
 * edge serving the same bytes from its cache, driven by wrk in the same run, at 100 KB and
 * 1 MB. Optionally nginx (static file) and Varnish (caching the bare server) beside them.
 *
 *   npm run bench:edge -- [--duration 2] [--rounds 6] [--connections 16] [--threads 1]
 *                         [--tokens] [--no-nginx] [--no-varnish] [--access [--access-brokers host:port]]
 *
 * --access compares the edge with access records on (every response, CMCD sid in the query, to
 * Kafka through the spilling producer: the brokers given, else KAFKA_BROKERS, else an unreachable
 * port so records go to the spill file) against the same edge with them off, in the same rounds
 * (DESIGN.md §4 target: within 5 %), instead of the edge against the bare server.
 *
 * Rounds run bare → edge → bare and edge → bare → edge alternately, back to back, so a noisy
 * neighbour on a shared machine hits both alike; each middle run is compared with the mean of the
 * two around it (drift cancels) and the outer pair is printed as the noise floor (A/A). Reported:
 * the median over rounds, and best vs best.
 * Needs wrk: apt-get update && apt-get install -y wrk (nginx/varnish: apt-get install -y nginx varnish).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises';
import { createServer } from 'node:http';
import { freePort } from '../../common/ports.ts';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { closeServer, listen, waitFor } from '../../common/http.ts';
import { createLogger } from '../../common/log.ts';
import { signPath, withPathToken } from '../../common/token.ts';
import { OriginReader } from '../../origin/reader.ts';
import { EMBEDDED_CREDENTIALS } from '../../origin/s3-config.ts';
import { createS3Client } from '../../origin/s3-client.ts';
import { startEmbeddedS3 } from '../../origin/s3-server.ts';
import { startEdge } from '../../edge/server.ts';

interface Args {
  duration: number;
  rounds: number;
  connections: number;
  threads: number;
  tokens: boolean;
  nginx: boolean;
  varnish: boolean;
  access: boolean;
  accessBrokers: string | undefined;
}

function parseArgs(argv: string[]): Args {
  const a: Args = {
    duration: 2,
    rounds: 6,
    connections: 16,
    threads: 1,
    tokens: false,
    nginx: true,
    varnish: true,
    access: false,
    accessBrokers: process.env.KAFKA_BROKERS || undefined,
  };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!;
    const num = () => {
      const v = Number(argv[++i]);
      if (!Number.isFinite(v) || v <= 0) throw new Error(`${k} needs a positive number`);
      return v;
    };
    if (k === '--duration') a.duration = num();
    else if (k === '--rounds') a.rounds = Math.floor(num());
    else if (k === '--connections') a.connections = Math.floor(num());
    else if (k === '--threads') a.threads = Math.floor(num());
    else if (k === '--tokens') a.tokens = true;
    else if (k === '--no-nginx') a.nginx = false;
    else if (k === '--no-varnish') a.varnish = false;
    else if (k === '--access') a.access = true;
    else if (k === '--access-brokers') a.accessBrokers = argv[++i];
    else if (k === '--help' || k === '-h') {
      process.stdout.write(
        'usage: npm run bench:edge -- [--duration s] [--rounds n] [--connections n] [--threads n] [--tokens] [--no-nginx] [--no-varnish] [--access [--access-brokers list]]\n',
      );
      process.exit(0);
    } else throw new Error(`unknown argument ${k}`);
  }
  return a;
}

function has(cmd: string, args: string[]): boolean {
  const r = spawnSync(cmd, args, { stdio: 'ignore' });
  return r.error === undefined;
}

interface WrkResult {
  rps: number;
  mbps: number; // body MB/s (10^6)
  errors: number;
  /** CPU time this process (where both node servers live) spent per request, µs. */
  cpuUsPerReq: number;
}

function wrk(url: string, size: number, a: Args): Promise<WrkResult> {
  return new Promise((resolve, reject) => {
    const cpu0 = process.cpuUsage();
    const p = spawn('wrk', [`-t${a.threads}`, `-c${a.connections}`, `-d${a.duration}s`, url], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (out += d.toString()));
    p.on('error', reject);
    p.on('close', (code) => {
      const cpu = process.cpuUsage(cpu0);
      const total = Number(/(\d+) requests in/.exec(out)?.[1]);
      const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]);
      if (code !== 0 || !Number.isFinite(rps)) return reject(new Error(`wrk failed (${code}) on ${url}:\n${out}`));
      const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1] ?? 0);
      const sockErr = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
      const errors = non2xx + (sockErr ? sockErr.slice(1).reduce((s, x) => s + Number(x), 0) : 0);
      resolve({ rps, mbps: (rps * size) / 1e6, errors, cpuUsPerReq: total > 0 ? (cpu.user + cpu.system) / total : NaN });
    });
  });
}

async function httpOk(url: string): Promise<boolean> {
  try {
    const r = await fetch(url, { signal: AbortSignal.timeout(1_000) });
    await r.arrayBuffer();
    return r.status === 200;
  } catch {
    return false;
  }
}

function body(n: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    b[i] = x & 0xff;
  }
  return b;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((p, q) => p - q);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  if (!has('wrk', ['--version'])) {
    process.stderr.write('bench:edge needs wrk. Install it with: apt-get update && apt-get install -y wrk\n');
    process.exit(1);
  }
  const work = await mkdtemp(join(tmpdir(), 'ocdn-bench-edge-'));
  // nginx and varnish workers drop to unprivileged users; they must be able to read in here.
  await chmod(work, 0o755);
  const children: ChildProcess[] = [];
  const cleanups: (() => Promise<void>)[] = [];
  try {
    const sizes = [
      { label: '100 KB', key: 'vod/bench/r/seg-00000.ts', bytes: body(100 * 1024, 1) },
      { label: '1 MB', key: 'vod/bench/r/seg-00001.ts', bytes: body(1024 * 1024, 2) },
    ];

    // Origin with the objects, as the packager writes them.
    const s3 = await startEmbeddedS3({ dir: join(work, 's3'), port: 0 });
    cleanups.push(() => s3.close());
    const client = createS3Client({ s3Endpoint: s3.endpoint, s3Region: 'us-east-1', forcePathStyle: true, ...EMBEDDED_CREDENTIALS });
    cleanups.push(async () => client.destroy());
    for (const s of sizes) {
      await client.send(
        new PutObjectCommand({
          Bucket: 'ocdn-media',
          Key: s.key,
          Body: s.bytes,
          ContentType: 'video/mp2t',
          Metadata: { sha256: createHash('sha256').update(s.bytes).digest('hex') },
        }),
      );
    }

    // The reference: node:http returning the Buffer, nothing else.
    const byPath = new Map(sizes.map((s) => [`/${s.key}`, s.bytes]));
    const bare = createServer((req, res) => {
      const b = byPath.get(req.url ?? '');
      if (!b) {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'content-type': 'video/mp2t', 'content-length': b.length });
      res.end(b);
    });
    const barePort = await listen(bare, 0);
    cleanups.push(() => closeServer(bare, 1_000));

    const secret = 'bench-secret-0123456789';
    const edge = await startEdge({
      id: 'edge-bench',
      region: 'bench',
      capacityBytes: 64 * 1024 * 1024,
      origin: new OriginReader({ client, bucket: 'ocdn-media' }),
      tokenSecret: a.tokens ? secret : null,
      log: createLogger('edge', { level: 'warn' }),
    });
    cleanups.push(() => edge.close());
    const edgeUrl = (path: string) =>
      // Path tokens, as steering issues them (common/token.ts).
      withPathToken(edge.url, path, a.tokens ? signPath(secret, path, Math.floor(Date.now() / 1000) + 3600) : undefined);
    for (const s of sizes) {
      const r = await fetch(edgeUrl(`/${s.key}`));
      const got = Buffer.from(await r.arrayBuffer());
      if (r.status !== 200 || !got.equals(s.bytes)) throw new Error(`edge did not serve ${s.key} correctly (${r.status})`);
      if ((await fetch(edgeUrl(`/${s.key}`))).headers.get('x-cache') !== 'HIT') throw new Error(`${s.key} is not a cache hit on the edge`);
    }

    const targets: { name: string; url: (path: string) => string }[] = [
      { name: 'bare node:http', url: (p) => `http://127.0.0.1:${barePort}${p}` },
      { name: `ocdn edge (hit${a.tokens ? ', tokens on' : ', tokens off'})`, url: edgeUrl },
    ];

    if (a.access) {
      // Both edges get the same URL, with a CMCD sid as players send it, so the one with records
      // on does all of their work (session parse, record, producer) and the other none.
      const brokers = a.accessBrokers ?? `127.0.0.1:${await freePort()}`;
      const recorded = await startEdge({
        id: 'edge-bench-access',
        region: 'bench',
        capacityBytes: 64 * 1024 * 1024,
        origin: new OriginReader({ client, bucket: 'ocdn-media' }),
        tokenSecret: a.tokens ? secret : null,
        brokers,
        accessSpillFile: join(work, 'access-spill.jsonl'),
        log: createLogger('edge', { level: 'warn' }),
      });
      cleanups.push(() => recorded.close());
      const cmcd = `CMCD=${encodeURIComponent('br=730,ot=v,sid="bench-session-0001"')}`;
      const recordedUrl = (path: string) =>
        `${withPathToken(recorded.url, path, a.tokens ? signPath(secret, path, Math.floor(Date.now() / 1000) + 3600) : undefined)}?${cmcd}`;
      for (const s of sizes) await fetch(recordedUrl(`/${s.key}`)).then((r) => r.arrayBuffer());
      targets.length = 0;
      targets.push({ name: 'ocdn edge, access records off', url: (p) => `${edgeUrl(p)}?${cmcd}` });
      targets.push({ name: 'ocdn edge, access records on', url: recordedUrl });
      process.stdout.write(`access records to ${a.accessBrokers ? `Kafka at ${brokers}` : `an unreachable broker (${brokers}): the spill file`}\n`);
      a.nginx = false;
      a.varnish = false;
    }

    if (a.nginx) {
      if (!has('nginx', ['-v'])) process.stdout.write('(nginx not installed: apt-get install -y nginx — skipped)\n');
      else {
        const root = join(work, 'nginx');
        await mkdir(join(root, 'html', 'vod', 'bench', 'r'), { recursive: true });
        for (const s of sizes) await writeFile(join(root, 'html', s.key), s.bytes);
        const port = await freePort();
        await writeFile(
          join(root, 'nginx.conf'),
          [
            'worker_processes 1;',
            'daemon off;',
            `pid ${join(root, 'nginx.pid')};`,
            `error_log ${join(root, 'error.log')} warn;`,
            'events { worker_connections 1024; }',
            'http {',
            '  access_log off;',
            '  sendfile on; tcp_nopush on; keepalive_requests 100000;',
            '  open_file_cache max=100 inactive=60s; open_file_cache_valid 60s;',
            `  client_body_temp_path ${root}/tmp; proxy_temp_path ${root}/tmp; fastcgi_temp_path ${root}/tmp; uwsgi_temp_path ${root}/tmp; scgi_temp_path ${root}/tmp;`,
            `  server { listen 127.0.0.1:${port}; root ${join(root, 'html')}; default_type video/mp2t; }`,
            '}',
          ].join('\n'),
        );
        await mkdir(join(root, 'tmp'), { recursive: true });
        const p = spawn('nginx', ['-p', root, '-c', join(root, 'nginx.conf')], { stdio: process.env.OCDN_BENCH_DEBUG ? 'inherit' : 'ignore' });
        children.push(p);
        const url = (path: string) => `http://127.0.0.1:${port}${path}`;
        await waitFor(() => httpOk(url(`/${sizes[0]!.key}`)), { timeoutMs: 10_000, what: 'nginx' });
        targets.push({ name: 'nginx 1 worker (sendfile)', url });
      }
    }
    if (a.varnish) {
      if (!has('varnishd', ['-V'])) process.stdout.write('(varnish not installed: apt-get install -y varnish — skipped)\n');
      else {
        const port = await freePort();
        const dir = join(work, 'varnish');
        await mkdir(dir, { recursive: true });
        const p = spawn('varnishd', ['-F', '-n', dir, '-a', `127.0.0.1:${port}`, '-b', `127.0.0.1:${barePort}`, '-s', 'malloc,64m', '-p', 'default_ttl=3600'], {
          stdio: process.env.OCDN_BENCH_DEBUG ? 'inherit' : 'ignore',
        });
        children.push(p);
        const url = (path: string) => `http://127.0.0.1:${port}${path}`;
        await waitFor(() => httpOk(url(`/${sizes[0]!.key}`)), { timeoutMs: 20_000, what: 'varnish' });
        for (const s of sizes) await httpOk(url(`/${s.key}`));
        targets.push({ name: 'varnish (cache hit, bare backend)', url });
      }
    }

    const os = await import('node:os');
    process.stdout.write(
      `wrk -t${a.threads} -c${a.connections} -d${a.duration}s, ${a.rounds} rounds, node ${process.version}, ${os.cpus().length} CPUs, load ${os
        .loadavg()
        .map((l) => l.toFixed(2))
        .join(' ')}\n`,
    );
    // Warm-up: JIT both request handlers and fill socket buffers before anything counts.
    for (const s of sizes) for (const t of targets.slice(0, 2)) await wrk(t.url(`/${s.key}`), s.bytes.length, { ...a, duration: 1 });

    const results = new Map<string, WrkResult[]>(); // `${size}|${target}`
    const ratios = new Map<string, number[]>(); // size → edge / mean(bare before, bare after), per round
    const controls = new Map<string, number[]>(); // size → same server after / before: the noise floor (A/A)
    const cpuRatios = new Map<string, number[]>(); // size → bare CPU per request / edge CPU per request
    const isNode = (t: { name: string }) => t === targets[0] || t === targets[1];
    const push = <T>(m: Map<string, T[]>, k: string, v: T) => m.set(k, [...(m.get(k) ?? []), v]);
    for (let round = 0; round < a.rounds; round++) {
      for (const s of sizes) {
        // bare → edge → bare, then edge → bare → edge next round: each side is compared with the
        // other's runs on either side of it, which cancels load drifting over the round and any
        // first/second-run bias; the outer pair (same server twice) shows how noisy the machine is.
        const [x, y] = round % 2 === 0 ? [targets[0]!, targets[1]!] : [targets[1]!, targets[0]!];
        const order = [x, y, x, ...targets.slice(2)];
        const got: WrkResult[] = [];
        for (const t of order) {
          const r = await wrk(t.url(`/${s.key}`), s.bytes.length, a);
          if (r.errors > 0) throw new Error(`${t.name} had ${r.errors} errors/non-2xx at ${s.label}`);
          got.push(r);
          push(results, `${s.label}|${t.name}`, r);
          const cpu = isNode(t) ? `${r.cpuUsPerReq.toFixed(1).padStart(6)} µs CPU/req` : '';
          process.stdout.write(
            `  round ${round + 1} ${s.label.padEnd(6)} ${t.name.padEnd(34)} ${r.rps.toFixed(0).padStart(7)} req/s ${r.mbps.toFixed(0).padStart(6)} MB/s ${cpu}\n`,
          );
        }
        const [o1, mid, o2] = got as [WrkResult, WrkResult, WrkResult];
        const outer = { rps: (o1.rps + o2.rps) / 2, cpu: (o1.cpuUsPerReq + o2.cpuUsPerReq) / 2 };
        const edgeFirst = x === targets[1];
        push(ratios, s.label, edgeFirst ? outer.rps / mid.rps : mid.rps / outer.rps);
        push(controls, s.label, o2.rps / o1.rps);
        push(cpuRatios, s.label, edgeFirst ? mid.cpuUsPerReq / outer.cpu : outer.cpu / mid.cpuUsPerReq);
      }
    }

    process.stdout.write('\nsize    target                              req/s median   req/s best   MB/s (best)   vs bare (median | best)   µs CPU/req\n');
    const summary: Record<string, { median: number; best: number }> = {};
    for (const s of sizes) {
      const bareRs = results.get(`${s.label}|${targets[0]!.name}`)!.map((r) => r.rps);
      for (const t of targets) {
        const rs = results.get(`${s.label}|${t.name}`)!;
        const med = median(rs.map((r) => r.rps));
        const best = Math.max(...rs.map((r) => r.rps));
        const ratioMed = t === targets[1] ? median(ratios.get(s.label)!) : med / median(bareRs);
        const ratioBest = best / Math.max(...bareRs);
        const cpu = isNode(t) ? median(rs.map((r) => r.cpuUsPerReq)).toFixed(1) : '-';
        process.stdout.write(
          `${s.label.padEnd(7)} ${t.name.padEnd(35)} ${med.toFixed(0).padStart(12)} ${best.toFixed(0).padStart(12)} ${((best * s.bytes.length) / 1e6).toFixed(0).padStart(13)}   ${ratioMed.toFixed(3).padStart(8)}x | ${ratioBest.toFixed(3)}x ${cpu.padStart(12)}\n`,
        );
        if (t === targets[1]) summary[s.label] = { median: ratioMed, best: ratioBest };
      }
      const fmt = (xs: number[]) => `${xs.map((x) => x.toFixed(2)).join(' ')}  (median ${median(xs).toFixed(3)})`;
      process.stdout.write(`        edge / bare, per round:            ${fmt(ratios.get(s.label)!)}\n`);
      process.stdout.write(`        same server twice (A/A control):   ${fmt(controls.get(s.label)!)}\n`);
      process.stdout.write(`        bare / edge CPU per request:       ${fmt(cpuRatios.get(s.label)!)}\n\n`);
    }
    if (a.access) {
      for (const s of sizes) {
        const v = summary[s.label]!;
        process.stdout.write(`  ${s.label.padEnd(7)} access records on / off: median ${v.median.toFixed(3)}   best ${v.best.toFixed(3)}   (target ≥ 0.95)\n`);
      }
      return;
    }
    process.stdout.write('edge/bare (target ≥ 0.9 at 100 KB, ≥ 0.95 at 1 MB). "median" = median over rounds of each middle run vs the\n');
    process.stdout.write('other server\'s runs just before and after it; "best" = best edge run vs best bare run (other tenants only ever slow a run down).\n');
    for (const s of sizes) {
      const target = s.label === '100 KB' ? 0.9 : 0.95;
      const v = summary[s.label]!;
      const ok = (x: number) => (x >= target ? 'OK' : 'below');
      const aa = controls.get(s.label)!;
      const spread = Math.max(...aa.map((x) => Math.abs(1 - x)));
      process.stdout.write(
        `  ${s.label.padEnd(7)} median ${v.median.toFixed(3)} (${ok(v.median)})   best ${v.best.toFixed(3)} (${ok(v.best)})   A/A noise up to ±${(spread * 100).toFixed(0)}%\n`,
      );
    }
  } finally {
    // Let nginx/varnish finish stopping before their working directory goes away.
    await Promise.all(
      children.map((c) =>
        c.exitCode !== null || c.signalCode !== null
          ? undefined
          : new Promise<void>((r) => {
              const t = setTimeout(() => (c.kill('SIGKILL'), r()), 5_000);
              c.once('close', () => (clearTimeout(t), r()));
              c.kill('SIGTERM');
            }),
      ),
    );
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
    await rm(work, { recursive: true, force: true }).catch(() => undefined);
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:edge: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});

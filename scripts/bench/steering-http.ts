/**
 * Steering decisions over HTTP: GET /v1/steer with 10 registered edges (3 regions), driven by
 * autocannon from a separate process so the load generator and the server do not share an
 * event loop (on a 2-core machine each gets a core). Reports decisions/s and latency
 * percentiles against the target (≥ 10k decisions/s, p99 < 5 ms).
 *
 *   npm run bench:steering -- [--duration 10] [--connections 16] [--policy hrw-bounded] [--titles 200]
 *                             [--no-baseline] [--json]
 *
 * When `wrk` is installed the same two targets are also driven by wrk (a C client using a
 * fraction of autocannon's CPU), which shows what the server itself sustains when the load
 * generator is not competing for one of the two cores.
 *
 * The same driver first runs against a bare node:http server answering a fixed body of the
 * size of a real steer answer (unless --no-baseline): on a shared 2-core machine the absolute
 * figures move with whatever else runs, the ratio to that baseline much less.
 *
 * Edges are registered in-process through the registry (heartbeats every 500 ms with varying
 * load and inventory, probes off: there is nothing listening at their URLs), so only the
 * steering path is measured. Tokens are on (one HMAC per decision: a token names its session, as in production).
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { createServer } from 'node:http';
import { closeServer, listen } from '../../common/http.ts';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import type { Catalog, EdgeHeartbeat } from '../../common/contracts.ts';
import { createLogger } from '../../common/log.ts';
import { readMetric } from '../../common/metrics.ts';
import { syntheticTitle, titleId } from '../../origin/catalog.ts';
import { getLadder } from '../../origin/ladder.ts';
import { isPolicyName, POLICY_NAMES } from '../../steering/policies.ts';
import { startSteering } from '../../steering/server.ts';

const REGIONS = ['us-east', 'us-west', 'eu-west'];

const { values } = parseArgs({
  options: {
    driver: { type: 'string' },
    duration: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '2' },
    connections: { type: 'string', default: '16' },
    policy: { type: 'string', default: 'hrw-bounded' },
    titles: { type: 'string', default: '200' },
    edges: { type: 'string', default: '10' },
    json: { type: 'boolean', default: false },
    baseline: { type: 'boolean', default: true },
    'no-baseline': { type: 'boolean', default: false },
    'no-wrk': { type: 'boolean', default: false },
  },
});

interface DriverResult {
  rps: number;
  requests: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  latency: { p50: number; p90: number; p99: number; p999: number; max: number; mean: number };
}

/** The load generator (child process): autocannon over rotating titles and regions. */
async function driver(url: string): Promise<void> {
  const titles = Number(values.titles);
  const run = (duration: number) =>
    new Promise<autocannon.Result>((resolve, reject) => {
      let i = 0;
      autocannon(
        {
          url,
          connections: Number(values.connections),
          duration,
          requests: [
            {
              method: 'GET',
              setupRequest: (req) => {
                const n = i++;
                return { ...req, path: `/v1/steer?title=${titleId((n % titles) + 1)}&region=${REGIONS[n % 3]}&session=s${n}&policy=${values.policy}` };
              },
            },
          ],
        },
        (err, result) => (err ? reject(err) : resolve(result)),
      );
    });
  if (Number(values.warmup) > 0) await run(Number(values.warmup));
  const r = await run(Number(values.duration));
  const out: DriverResult = {
    rps: r.requests.average,
    requests: r.requests.total,
    non2xx: r.non2xx,
    errors: r.errors,
    timeouts: r.timeouts,
    latency: { p50: r.latency.p50, p90: r.latency.p90, p99: r.latency.p99, p999: r.latency.p99_9, max: r.latency.max, mean: r.latency.mean },
  };
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

async function main(): Promise<void> {
  if (!isPolicyName(values.policy!)) throw new Error(`--policy must be one of ${POLICY_NAMES.join(', ')}`);
  const nTitles = Number(values.titles);
  const ladder = getLadder('small');
  const catalog: Catalog = {
    version: 1,
    generatedAt: new Date().toISOString(),
    ladder: 'small',
    titles: Array.from({ length: nTitles }, (_, i) => syntheticTitle({ id: titleId(i + 1), rank: i + 1, durationSec: 600, segmentSec: 4, ladder })),
  };
  const st = await startSteering({
    port: 0,
    tokenSecret: 'bench-secret-0123456789',
    // Edges are registered in-process below, not over HTTP; the key keeps admission as deployed.
    edgeKey: 'bench-edge-key-0123456789',
    catalog,
    // One in-process beat is the only observation there is (probes off): up on it.
    registry: { probeIntervalMs: 0, heartbeatIntervalMs: 500, rise: 1 },
    log: createLogger('steering', { level: 'warn' }),
  });
  const nEdges = Number(values.edges);
  const beat = (i: number): EdgeHeartbeat => ({
    id: `edge-${i + 1}`,
    url: `http://127.0.0.1:${20_000 + i}`,
    region: REGIONS[i % REGIONS.length]!,
    capacityBytes: 256e6,
    usedBytes: 128e6,
    inFlight: 10,
    rps: 100,
    egressBps: 200e6 + Math.round(Math.random() * 100e6),
    healthy: true,
    // A realistic inventory: each edge holds a quarter of the titles.
    titles: Array.from({ length: Math.ceil(nTitles / 4) }, (_, k) => titleId(((i * 7 + k * 4) % nTitles) + 1)),
    ts: Date.now(),
  });
  const beatAll = () => {
    for (let i = 0; i < nEdges; i++) st.registry.heartbeat(beat(i));
  };
  beatAll();
  const timer = setInterval(beatAll, 500);

  try {
    let base: (DriverResult & { serverCpuUsPerRequest: number }) | undefined;
    let bareUrl: string | undefined;
    let bare: ReturnType<typeof createServer> | undefined;
    const wantBaseline = values.baseline && !values['no-baseline'];
    if (wantBaseline) {
      // A real answer, so the baseline moves the same bytes per request.
      const sample = await (await fetch(`${st.url}/v1/steer?title=${titleId(1)}&region=us-east&session=s0`)).text();
      bare = createServer((_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(sample), 'cache-control': 'no-store' });
        res.end(sample);
      });
      bareUrl = `http://127.0.0.1:${await listen(bare, 0)}`;
      base = await runDriver(bareUrl);
    }
    const r = await runDriver(st.url);
    let wrkFigures: { steering: WrkResult; bare?: WrkResult } | undefined;
    if (!values['no-wrk'] && spawnSync('wrk', ['--version']).error === undefined) {
      wrkFigures = { bare: bareUrl ? await runWrk(bareUrl) : undefined, steering: await runWrk(st.url) };
    }
    if (bare) await closeServer(bare, 1_000);
    const metrics = await st.metrics.metrics();
    const counted = readMetric(metrics, 'ocdn_steering_decisions_total', { policy: values.policy! });
    const report = {
      policy: values.policy,
      edges: nEdges,
      titles: nTitles,
      connections: Number(values.connections),
      durationSec: Number(values.duration),
      decisionsPerSec: Math.round(r.rps),
      requests: r.requests,
      non2xx: r.non2xx,
      errors: r.errors + r.timeouts,
      latencyMs: r.latency,
      serverCpuUsPerRequest: r.serverCpuUsPerRequest,
      decisionsCounted: counted,
      wrk: wrkFigures,
      baseline: base
        ? {
            bareNodeHttpRps: Math.round(base.rps),
            latencyMs: base.latency,
            serverCpuUsPerRequest: base.serverCpuUsPerRequest,
            ratio: Math.round((r.rps / base.rps) * 100) / 100,
          }
        : undefined,
      target: { decisionsPerSec: 10_000, p99Ms: 5 },
      pass: r.rps >= 10_000 && r.latency.p99 < 5 && r.non2xx === 0 && r.errors === 0,
    };
    if (values.json) {
      process.stdout.write(`${JSON.stringify(report)}\n`);
    } else {
      process.stdout.write(
        `${[
          `steering /v1/steer  policy=${report.policy}  edges=${nEdges}  titles=${nTitles}  connections=${report.connections}  ${report.durationSec}s (autocannon in its own process)`,
          `  decisions/s   ${report.decisionsPerSec.toLocaleString('en-US')}   (target ≥ 10,000)`,
          `  latency ms    p50 ${r.latency.p50}  p90 ${r.latency.p90}  p99 ${r.latency.p99}  p99.9 ${r.latency.p999}  max ${r.latency.max}   (target p99 < 5)`,
          `  requests      ${r.requests.toLocaleString('en-US')}  non-2xx ${r.non2xx}  errors ${report.errors}  counted by /metrics ${counted.toLocaleString('en-US')} (warm-up included)`,
          `  server CPU    ${r.serverCpuUsPerRequest} µs per decision (≈ ${Math.round(1e6 / r.serverCpuUsPerRequest).toLocaleString('en-US')}/s per core)${base ? `; bare node:http ${base.serverCpuUsPerRequest} µs per request` : ''}`,
          ...(base
            ? [
                `  baseline      bare node:http, same body and driver: ${Math.round(base.rps).toLocaleString('en-US')}/s, p50 ${base.latency.p50} p99 ${base.latency.p99} ms` +
                  `  → steering at ${(r.rps / base.rps).toFixed(2)}× of it`,
              ]
            : []),
          ...(wrkFigures
            ? [
                `  wrk (same mix, 1 thread): steering ${Math.round(wrkFigures.steering.rps).toLocaleString('en-US')}/s p50 ${wrkFigures.steering.p50} p99 ${wrkFigures.steering.p99} ms` +
                  (wrkFigures.bare ? `; bare node:http ${Math.round(wrkFigures.bare.rps).toLocaleString('en-US')}/s p99 ${wrkFigures.bare.p99} ms` : ''),
              ]
            : []),
          `  ${report.pass ? 'PASS' : 'FAIL'} (autocannon figures against the target)`,
        ].join('\n')}\n`,
      );
    }
    if (!report.pass) process.exitCode = 1;
  } finally {
    clearInterval(timer);
    await st.close();
  }
}

interface WrkResult {
  rps: number;
  p50: number;
  p90: number;
  p99: number;
}

const WRK_SCRIPT = `
local i = 0
local regions = {"us-east", "us-west", "eu-west"}
request = function()
  i = i + 1
  return wrk.format("GET", "/v1/steer?title=title-" .. string.format("%04d", (i % TITLES) + 1) .. "&region=" .. regions[(i % 3) + 1] .. "&session=s" .. i .. "&policy=POLICY")
end
`;

/** wrk with the same request mix; latency percentiles in ms. */
async function runWrk(url: string): Promise<WrkResult> {
  const dir = await mkdtemp(join(tmpdir(), 'ocdn-wrk-'));
  try {
    const script = join(dir, 'steer.lua');
    await writeFile(script, WRK_SCRIPT.replace('TITLES', String(Number(values.titles))).replace('POLICY', values.policy!));
    const out = await new Promise<string>((resolve, reject) => {
      const p = spawn('wrk', ['-t1', `-c${values.connections}`, `-d${values.duration}s`, '--latency', '-s', script, url], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      let text = '';
      p.stdout.on('data', (d: Buffer) => (text += d.toString()));
      p.on('close', (code) => (code === 0 ? resolve(text) : reject(new Error(`wrk exited with ${code}: ${text}`))));
    });
    const ms = (label: string) => {
      const m = new RegExp(`^\\s*${label}%\\s+([\\d.]+)(us|ms|s)`, 'm').exec(out);
      if (!m) return NaN;
      const v = Number(m[1]);
      return Math.round((m[2] === 'us' ? v / 1000 : m[2] === 's' ? v * 1000 : v) * 100) / 100;
    };
    return { rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]), p50: ms('50'), p90: ms('90'), p99: ms('99') };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Runs the autocannon driver in a child process against `url` and returns its figures, plus
 * the CPU this process (the server side) spent per request: unlike throughput on a shared
 * machine, that does not move with what else is running.
 */
async function runDriver(url: string): Promise<DriverResult & { serverCpuUsPerRequest: number }> {
  const cpu0 = process.cpuUsage();
  const r = await runDriverProcess(url);
  const cpu = process.cpuUsage(cpu0);
  // The warm-up run's requests are not in r.requests; scale by the measured share of time.
  const measured = Number(values.duration) / (Number(values.duration) + Number(values.warmup));
  return { ...r, serverCpuUsPerRequest: Math.round((((cpu.user + cpu.system) * measured) / Math.max(1, r.requests)) * 10) / 10 };
}

async function runDriverProcess(url: string): Promise<DriverResult> {
  const self = fileURLToPath(import.meta.url);
  const root = join(dirname(self), '..', '..');
  const child = spawn(process.execPath, ['--import', 'tsx', self, '--driver', url, ...process.argv.slice(2)], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let stdout = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  if (code !== 0) throw new Error(`autocannon driver exited with ${code}`);
  return JSON.parse(stdout.trim().split('\n').at(-1)!) as DriverResult;
}

if (values.driver) await driver(values.driver);
else await main();

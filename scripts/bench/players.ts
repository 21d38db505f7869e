/**
 * How many sessions one player process sustains.
 *
 *   npm run bench:players [-- --virtual 10000,20000 --real 1000,1500 --real-duration 60s --network const:1.5mbps]
 *
 * Virtual: N sessions all playing at once (ramp 10 s, 120 s titles, 60 s of virtual time);
 * reported: wall time, speed-up over real time, events/s, RSS.
 * Real: N sessions over real HTTP against local edges in a separate process (embedded S3 +
 * edges, scripts/bench/players-cdn.ts), ramped over 20 s and all playing until the end of the
 * run. A level counts as sustained when every session started, none failed, the rebuffer
 * ratio stayed under 1% and the player's event loop p99 delay stayed under 100 ms (beyond
 * that the player, not the network, would be making the stalls).
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { parseDuration } from '../../common/units.ts';
import { NullSink } from '../../player-sim/sinks.ts';
import { runPlayers } from '../../player-sim/runner.ts';

const { values } = parseArgs({
  options: {
    virtual: { type: 'string', default: '10000' },
    real: { type: 'string', default: '1000' },
    'real-duration': { type: 'string', default: '60s' },
    network: { type: 'string', default: 'const:1.5mbps' },
    json: { type: 'boolean', default: false },
  },
});
const list = (s: string | undefined) =>
  (s ?? '')
    .split(',')
    .map((x) => Number(x.trim()))
    .filter((n) => n > 0);
const out: Record<string, unknown>[] = [];
const log = (line: string) => process.stderr.write(`${line}\n`);

for (const n of list(values.virtual)) {
  const sink = new NullSink();
  const t = performance.now();
  const { summary } = await runPlayers({
    virtual: true,
    players: n,
    rampMs: 10_000,
    durationMs: 60_000,
    loop: false,
    watchMeanS: 'full',
    sink,
    network: 'walk',
    abr: 'dynamic',
    virtualCdn: { titles: 50, durationSec: 120, edges: 4 },
  });
  const wall = performance.now() - t;
  const row = {
    mode: 'virtual',
    sessions: n,
    peakConcurrent: summary.peakConcurrent,
    simulatedS: summary.simulatedMs / 1000,
    wallS: wall / 1000,
    speedup: summary.simulatedMs / wall,
    events: sink.count,
    eventsPerS: sink.count / (wall / 1000),
    startFailures: summary.startFailures,
    rebufferRatio: summary.rebufferRatio,
    rssMB: process.memoryUsage().rss / 1e6,
  };
  out.push(row);
  log(
    `virtual ${n}: peak ${row.peakConcurrent} concurrent, ${row.simulatedS.toFixed(0)} s simulated in ${row.wallS.toFixed(1)} s (${row.speedup.toFixed(1)}× real time), ${sink.count} events (${Math.round(row.eventsPerS)}/s), RSS ${row.rssMB.toFixed(0)} MB`,
  );
}

const realLevels = list(values.real);
if (realLevels.length > 0) {
  const child = spawn(process.execPath, ['--import', 'tsx', new URL('./players-cdn.ts', import.meta.url).pathname, '--edges', '2'], {
    stdio: ['pipe', 'pipe', 'inherit'],
    env: { ...process.env, OCDN_LOG_LEVEL: 'warn' },
  });
  try {
    const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
    const cdn = JSON.parse(line) as { edges: string[]; titles: string[] };
    log(`local CDN ready: ${cdn.edges.join(', ')}`);
    const durationMs = parseDuration(values['real-duration']!);
    for (const n of realLevels) {
      const h = monitorEventLoopDelay({ resolution: 10 });
      h.enable();
      const cpu0 = process.cpuUsage();
      const t = performance.now();
      const { summary } = await runPlayers({
        players: n,
        rampMs: 20_000,
        durationMs,
        loop: false,
        watchMeanS: 'full',
        edges: cdn.edges,
        catalog: cdn.titles,
        titles: 'zipf:0.9',
        network: values.network,
        abr: 'throughput',
        sink: new NullSink(),
        startTimeoutMs: 15_000,
      });
      h.disable();
      const wall = performance.now() - t;
      const cpu = process.cpuUsage(cpu0);
      const row = {
        mode: 'real',
        sessions: n,
        peakConcurrent: summary.peakConcurrent,
        started: summary.started,
        startFailures: summary.startFailures,
        errors: summary.errors,
        rebufferRatio: summary.rebufferRatio,
        vstP95Ms: summary.vstP95Ms,
        avgBitrate: summary.avgBitrate,
        gbytes: summary.bytes / 1e9,
        mbitPerS: (summary.bytes * 8) / 1e6 / (wall / 1000),
        loopDelayP99Ms: h.percentile(99) / 1e6,
        playerCpuPct: ((cpu.user + cpu.system) / 1000 / wall) * 100,
        wallS: wall / 1000,
        hitRatio:
          summary.edges.reduce((a, e) => a + e.hits, 0) /
          Math.max(
            1,
            summary.edges.reduce((a, e) => a + e.segments, 0),
          ),
      };
      const sustained =
        row.startFailures === 0 && row.errors === 0 && row.started === n && row.rebufferRatio !== null && row.rebufferRatio < 0.01 && row.loopDelayP99Ms < 100;
      out.push({ ...row, sustained });
      log(
        `real ${n}: ${sustained ? 'SUSTAINED' : 'not sustained'}; started ${row.started}, start failures ${row.startFailures}, errors ${row.errors}, ` +
          `rebuffer ${row.rebufferRatio === null ? '-' : `${(row.rebufferRatio * 100).toFixed(3)}%`}, VST p95 ${Math.round(row.vstP95Ms ?? 0)} ms, avg ${(row.avgBitrate / 1e6).toFixed(2)} Mbit/s, ` +
          `${row.mbitPerS.toFixed(0)} Mbit/s through edges, loop p99 ${row.loopDelayP99Ms.toFixed(1)} ms, player CPU ${row.playerCpuPct.toFixed(0)}%`,
      );
    }
  } finally {
    child.kill('SIGTERM');
    await once(child, 'exit').catch(() => {});
  }
}
if (values.json) process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);

/**
 * Telemetry benchmark: sustained events/s from the producer through a real Kafka broker to
 * aggregates visible in /v1/qoe, and freshness (event time → visible in /v1/qoe) p50/p99.
 *
 *   npm run bench:telemetry -- [--duration 20s] [--rate 0|N] [--brokers host:port] [--window 10s] [--profile DIR]
 *
 * Three processes share the machine, as in a deployment: the broker (JVM), the aggregator
 * (`ocdn telemetry aggregate`, its own Node process) and this one (event generator + producer
 * + the /v1/qoe poller that measures freshness). `--rate 0` offers as much as the producer
 * takes; `--rate N` offers N events/s to measure freshness below saturation.
 */
import { spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { waitFor } from '../../common/http.ts';
import { createLogger } from '../../common/log.ts';
import { readMetric } from '../../common/metrics.ts';
import { parseDuration } from '../../common/units.ts';
import type { QoeEvent } from '../../telemetry/events.ts';
import { ensureTopics } from '../../telemetry/kafka.ts';
import { topicNames } from '../../telemetry/topics.ts';
import { createProducer } from '../../telemetry/producer.ts';
import type { QoeResult } from '../../telemetry/view.ts';
import { freePorts } from '../../common/ports.ts';
import { startKafka, type KafkaHandle } from '../kafka.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const { values: args } = parseArgs({
  options: {
    duration: { type: 'string', default: '20s' },
    rate: { type: 'string', default: '0' },
    brokers: { type: 'string' },
    window: { type: 'string', default: '10s' },
    grace: { type: 'string', default: '1s' },
    sessions: { type: 'string', default: '5000' },
    compression: { type: 'string', default: 'none' },
    out: { type: 'string' },
    /** Directory for a V8 CPU profile of the aggregator process. */
    profile: { type: 'string' },
  },
});
const durationMs = parseDuration(args.duration!);
const rate = Number(args.rate);
const windowMs = parseDuration(args.window!);
const graceMs = parseDuration(args.grace!);
const sessions = Number(args.sessions);
const say = (s: string) => process.stderr.write(`bench: ${s}\n`);
const quiet = createLogger('bench', { level: 'warn' });

const round1 = (x: number) => Math.round(x * 10) / 10;

/** utime + stime of a process from /proc, in seconds (Linux). */
function jvmCpuSeconds(pid: number | undefined): number {
  if (!pid) return 0;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return 0;
  }
}

function pct(sorted: number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

/** A realistic mix: mostly segments and heartbeats over many sessions and dimension values. */
function makeGenerator() {
  const dims = Array.from({ length: sessions }, (_, i) => ({
    sessionId: `bench-${randomBytes(4).toString('hex')}-${i}`,
    title: `title-${String(i % 200).padStart(4, '0')}`,
    edgeId: `edge-${(i % 20) + 1}`,
    region: ['eu-west', 'eu-central', 'us-east', 'us-west', 'ap-south'][i % 5]!,
    isp: `isp-${i % 10}`,
    device: ['tv', 'mobile', 'web', 'console'][i % 4]!,
    abr: ['throughput', 'bba', 'bola'][i % 3]!,
    seq: 0,
  }));
  let n = 0;
  return (ts: number): QoeEvent => {
    const d = dims[n % dims.length]!;
    const r = n++ % 20;
    // Whole literals, not `{ ...base, type, ... }`: on Node 20 (V8 11.3) properties added after
    // a spread take a slow path (~1–2 µs each), which made this generator cost more CPU per
    // event than the producer it is meant to measure.
    const id = randomUUID();
    const seq = d.seq++;
    if (r < 14)
      return {
        v: 1,
        id,
        ts,
        sessionId: d.sessionId,
        seq,
        title: d.title,
        edgeId: d.edgeId,
        region: d.region,
        isp: d.isp,
        device: d.device,
        abr: d.abr,
        type: 'segment',
        rendition: '2000k',
        bitrate: 2_000_000,
        index: d.seq,
        bytes: 1_000_000,
        ttfbMs: 12,
        downloadMs: 80,
        throughputBps: 1e8,
        cacheStatus: r % 7 === 0 ? 'MISS' : 'HIT',
      };
    if (r < 18)
      return {
        v: 1,
        id,
        ts,
        sessionId: d.sessionId,
        seq,
        title: d.title,
        edgeId: d.edgeId,
        region: d.region,
        isp: d.isp,
        device: d.device,
        abr: d.abr,
        type: 'heartbeat',
        bufferS: 12,
        rendition: '2000k',
        bitrate: 2_000_000,
        playedS: d.seq,
      };
    if (r === 18)
      return {
        v: 1,
        id,
        ts,
        sessionId: d.sessionId,
        seq,
        title: d.title,
        edgeId: d.edgeId,
        region: d.region,
        isp: d.isp,
        device: d.device,
        abr: d.abr,
        type: 'startup',
        vstMs: 300 + (d.seq % 50) * 20,
        rendition: '730k',
        bitrate: 730_000,
      };
    return {
      v: 1,
      id,
      ts,
      sessionId: d.sessionId,
      seq,
      title: d.title,
      edgeId: d.edgeId,
      region: d.region,
      isp: d.isp,
      device: d.device,
      abr: d.abr,
      type: 'stall_end',
      stallMs: 250,
    };
  };
}

async function main(): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), 'ocdn-bench-telemetry-'));
  let kafka: KafkaHandle | undefined;
  let brokers = args.brokers ?? process.env.KAFKA_BROKERS;
  const cleanup: (() => Promise<void>)[] = [];
  try {
    if (!brokers) {
      const [p, c] = await freePorts(2);
      say('starting a Kafka broker for the run');
      kafka = await startKafka({ dir: join(work, 'kafka'), port: p!, controllerPort: c!, log: quiet, onProgress: say });
      brokers = kafka.brokers;
    }
    const prefix = `bench-${randomBytes(3).toString('hex')}.`;
    const topics = topicNames(prefix);
    await ensureTopics(brokers, { topics });
    const [aggPort] = await freePorts(1);
    const url = `http://127.0.0.1:${aggPort}`;
    const agg = spawn(
      process.execPath,
      [
        ...(args.profile ? ['--cpu-prof', `--cpu-prof-dir=${resolve(args.profile)}`] : []),
        join(ROOT, 'bin', 'ocdn.js'),
        'telemetry',
        'aggregate',
        '--brokers',
        brokers,
        '--port',
        String(aggPort),
        '--topic-prefix',
        prefix,
        '--group',
        `${prefix}agg`,
        '--window',
        args.window!,
        '--grace',
        args.grace!,
      ],
      { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, OCDN_LOG_LEVEL: 'warn' } },
    );
    const aggExit = new Promise<void>((r) => agg.once('exit', () => r()));
    cleanup.push(async () => {
      agg.kill('SIGTERM');
      await aggExit;
    });
    await waitFor(async () => (await fetch(`${url}/healthz`)).ok, { timeoutMs: 60_000, what: 'aggregator /healthz' });
    const metric = async (name: string, labels: Record<string, string> = {}) => readMetric(await (await fetch(`${url}/metrics`)).text(), name, labels);

    const prod = createProducer({
      brokers,
      topic: topics.events,
      spillFile: join(work, 'spill.jsonl'),
      lingerMs: 5,
      batchSize: 2_000,
      maxQueue: 1_000_000,
      compression: args.compression === 'gzip' ? 'gzip' : 'none',
      log: quiet,
    });
    cleanup.unshift(() => prod.close());
    const gen = makeGenerator();

    // Per window: checkpoints (count produced so far, event time) to map "k-th event of window w" to its time.
    const produced = new Map<number, { n: number; marks: { n: number; ts: number }[] }>();
    const note = (ts: number) => {
      const w = Math.floor(ts / windowMs) * windowMs;
      let s = produced.get(w);
      if (!s) produced.set(w, (s = { n: 0, marks: [] }));
      if (s.n % 500 === 0) s.marks.push({ n: s.n, ts });
      s.n++;
    };
    const tsOfRank = (w: number, k: number) => {
      const s = produced.get(w);
      if (!s) return undefined;
      let lo = 0;
      let hi = s.marks.length - 1;
      while (lo < hi) {
        const mid = (lo + hi + 1) >> 1;
        if (s.marks[mid]!.n <= k) lo = mid;
        else hi = mid - 1;
      }
      return s.marks[lo]?.ts;
    };

    // Freshness poller: every 100 ms, what became visible since the last look.
    const visible = new Map<number, number>();
    const freshness: number[] = [];
    let polling = true;
    const poller = (async () => {
      while (polling) {
        try {
          const r = (await (await fetch(`${url}/v1/qoe?by=all&window=${windowMs}ms&last=2m`)).json()) as QoeResult;
          const now = Date.now();
          for (const w of r.windows) {
            const c = w.rows[0]?.events ?? 0;
            const prev = visible.get(w.start) ?? 0;
            // Every 50th newly visible event is a sample; its event time comes from the checkpoints.
            for (let k = prev - (prev % 50) + (prev % 50 === 0 ? 0 : 50); k < c; k += 50) {
              const ts = tsOfRank(w.start, k);
              if (ts !== undefined) freshness.push(now - ts);
            }
            if (c > prev) visible.set(w.start, c);
          }
        } catch {
          /* aggregator busy: next poll */
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    })();

    say(`producing for ${durationMs / 1000}s at ${rate > 0 ? `${rate} events/s` : 'the highest rate the producer takes'}`);
    const aggCpu0 = await metric('process_cpu_seconds_total');
    const brokerCpu0 = jvmCpuSeconds(kafka?.pid);
    const cpu0 = process.cpuUsage();
    const t0 = Date.now();
    let sent = 0;
    while (Date.now() - t0 < durationMs) {
      const elapsed = Date.now() - t0;
      const target = rate > 0 ? Math.floor((elapsed / 1000) * rate) : sent + 1_000;
      const now = Date.now();
      const burst = Math.min(target - sent, 20_000);
      let last: Promise<void> | undefined;
      for (let i = 0; i < burst; i++) {
        last = prod.send(gen(now));
        note(now);
      }
      sent += burst;
      // Back-pressure: a short queue, so event times are not aged by waiting in the producer.
      if (prod.backlog().memory > 20_000 && last) await last;
      else await new Promise((r) => setImmediate(r));
      if (rate > 0) await new Promise((r) => setTimeout(r, 5));
    }
    await prod.flush();
    const tProduced = Date.now();
    say(`produced ${sent} events in ${((tProduced - t0) / 1000).toFixed(1)}s; waiting for the aggregator to count them`);
    await waitFor(
      async () =>
        (await metric('ocdn_telemetry_events_total', { result: 'added' })) + (await metric('ocdn_telemetry_events_total', { result: 'late' })) >= sent,
      {
        timeoutMs: 600_000,
        intervalMs: 200,
        what: 'the aggregator to read every event',
      },
    );
    const tAggregated = Date.now();
    const benchCpu = process.cpuUsage(cpu0);
    const aggCpu = (await metric('process_cpu_seconds_total')) - aggCpu0;
    const brokerCpu = kafka ? jvmCpuSeconds(kafka.pid) - brokerCpu0 : Number.NaN;
    const late = await metric('ocdn_telemetry_events_total', { result: 'late' });
    // Open windows are published every second: give the last of them time to show.
    await waitFor(() => [...visible.values()].reduce((a, b) => a + b, 0) >= sent - late, {
      timeoutMs: 30_000,
      intervalMs: 100,
      what: 'all events visible in /v1/qoe',
    }).catch(() => undefined);
    polling = false;
    await poller;
    const metricsText = await (await fetch(`${url}/metrics`)).text();
    const hist = (le: string) => readMetric(metricsText, 'ocdn_telemetry_freshness_seconds_bucket', { le });
    const count = readMetric(metricsText, 'ocdn_telemetry_freshness_seconds_count');
    const buckets = ['0.1', '0.25', '0.5', '1', '2', '3', '5', '8', '10', '12', '15', '20', '30', '60', '120', '+Inf'];
    const histQ = (q: number) => buckets.find((b) => hist(b) >= q * count) ?? '+Inf';
    freshness.sort((a, b) => a - b);
    const visibleTotal = [...visible.values()].reduce((a, b) => a + b, 0);
    const result = {
      at: new Date().toISOString(),
      machine: `${(await import('node:os')).cpus().length} cores`,
      offeredRate: rate > 0 ? rate : 'max',
      durationS: (tProduced - t0) / 1000,
      events: sent,
      producerEventsPerS: Math.round(sent / ((tProduced - t0) / 1000)),
      endToEndEventsPerS: Math.round(sent / ((tAggregated - t0) / 1000)),
      aggregatorCatchUpS: (tAggregated - tProduced) / 1000,
      late,
      visibleInApi: visibleTotal,
      freshnessSamples: freshness.length,
      freshnessP50S: pct(freshness, 0.5) / 1000,
      freshnessP99S: pct(freshness, 0.99) / 1000,
      aggregatorPublishFreshnessP50S: `<= ${histQ(0.5)}`,
      aggregatorPublishFreshnessP99S: `<= ${histQ(0.99)}`,
      // Where the time goes: CPU per event in each process, and cores busy over the run.
      cpuMicrosPerEvent: {
        producerProcess: round1((benchCpu.user + benchCpu.system) / sent),
        aggregatorProcess: round1((aggCpu * 1e6) / sent),
        broker: kafka ? round1((brokerCpu * 1e6) / sent) : 'external',
      },
      producerRequests: {
        count: prod.requestStats.requests,
        eventsPerRequest: Math.round(prod.requestStats.events / Math.max(1, prod.requestStats.requests)),
        meanMs: round1((prod.requestStats.seconds * 1000) / Math.max(1, prod.requestStats.requests)),
      },
      coresBusy: round1(((benchCpu.user + benchCpu.system) / 1e6 + aggCpu + (kafka ? brokerCpu : 0)) / ((tAggregated - t0) / 1000)),
      windowS: windowMs / 1000,
      graceS: graceMs / 1000,
    };
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    if (args.out) await writeFile(args.out, `${JSON.stringify(result)}\n`, { flag: 'a' });
  } finally {
    for (const c of cleanup) await c().catch(() => undefined);
    await kafka?.stop(20_000);
    await rm(work, { recursive: true, force: true });
  }
}

await main();

import { join } from 'node:path';
import type { Command } from 'commander';
import { pino } from 'pino';
import { readContext, START_HINT, stateFile } from '../common/cluster-context.ts';
import { addDirOption } from '../common/command-config.ts';
import { ConfigError, loadConfig } from '../common/config.ts';
import { describeError, ErrorCodes, OcdnError } from '../common/errors.ts';
import { formatBytes, parseDuration } from '../common/units.ts';
import type { EventSink, QoeEvent } from '../telemetry/events.ts';
import { ABR_NAMES, type AbrName } from '../player-sim/abr/index.ts';
import type { CatalogSource } from '../player-sim/catalog.ts';
import { parseTraceSpec } from '../player-sim/network.ts';
import type { RunSummary } from '../player-sim/runner.ts';
import { renderTable } from '../common/table.ts';

export const playSpec = {
  players: { type: 'int', flag: '--players', env: 'OCDN_PLAYERS', default: 100, min: 1 },
  ramp: { type: 'duration', flag: '--ramp', default: '10s' },
  duration: { type: 'duration', flag: '--duration', default: '60s', min: 1 },
  abr: { type: 'enum', flag: '--abr', values: ABR_NAMES, default: 'throughput' },
  network: { type: 'string', flag: '--network', default: 'const:5mbps' },
  rtt: { type: 'duration', flag: '--rtt', default: '20ms' },
  speed: { type: 'number', flag: '--speed', default: 1, min: 0.01, max: 1000 },
  titles: { type: 'string', flag: '--titles', default: 'zipf:0.9' },
  steering: { type: 'url', flag: '--steering', env: 'OCDN_STEERING_URL', ctx: 'steeringUrl' },
  edge: { type: 'list', flag: '--edge' },
  brokers: { type: 'list', flag: '--brokers', env: 'KAFKA_BROKERS', ctx: 'brokers' },
  eventsFile: { type: 'string', flag: '--events-file', default: '.ocdn/play-events.jsonl' },
  spillDir: { type: 'string', flag: '--spill-dir', env: 'OCDN_SPILL_DIR', default: '.ocdn/spill' },
  spillMaxBytes: { type: 'bytes', flag: '--spill-max-bytes', default: '1GiB', min: 4096 },
  seed: { type: 'int', flag: '--seed', default: 42, min: 0, max: 4_294_967_295 },
  virtual: { type: 'bool', flag: '--virtual', default: false },
  json: { type: 'bool', flag: '--json', default: false },
  cmcd: { type: 'enum', flag: '--cmcd', values: ['query', 'headers', 'off'], default: 'query' },
  abrCmsd: { type: 'bool', flag: '--abr-cmsd', default: false },
  watch: { type: 'string', flag: '--watch', default: '120s', pattern: /^(full|\d+(\.\d+)?(ms|s|m|h)?)$/ },
  loop: { type: 'bool', flag: '--loop', default: true },
  region: { type: 'string', flag: '--region', env: 'OCDN_REGION', default: 'local', pattern: /^[A-Za-z0-9._-]{1,64}(,[A-Za-z0-9._-]{1,64})*$/ },
  maxBuffer: { type: 'duration', flag: '--max-buffer', default: '30s', min: 1000 },
  startTimeout: { type: 'duration', flag: '--start-timeout', default: '15s', min: 1 },
  catalogTitles: { type: 'int', flag: '--catalog-titles', min: 1 },
  virtualTitles: { type: 'int', flag: '--virtual-titles', default: 20, min: 1 },
  virtualEdges: { type: 'int', flag: '--virtual-edges', default: 2, min: 1 },
} as const;

function collect(value: string, previous: string[] | undefined): string[] {
  return [
    ...(previous ?? []),
    ...value
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean),
  ];
}

/**
 * Where the players go: steering, or a fixed edge list. The one place --steering and --edge are
 * resolved (the catalog and the sessions both follow it).
 */
function playTarget(cfg: { steering?: string; edge?: string[] }): CatalogSource | undefined {
  if (cfg.steering) return { steering: cfg.steering };
  if (cfg.edge && cfg.edge.length > 0) return { edges: cfg.edge };
  return undefined;
}

/** Title ids by rank for zipf/uniform draws: title-0001..N when given, else the CDN's catalog (steering /v1/catalog, or an edge's /catalog.json). */
async function loadCatalog(catalogTitles: number | undefined, target: CatalogSource): Promise<string[]> {
  if (catalogTitles !== undefined) return Array.from({ length: catalogTitles }, (_, i) => `title-${String(i + 1).padStart(4, '0')}`);
  // Loaded when a run needs it, with the runner: the CLI registering `play` does not pay for undici.
  const { catalogUrls, fetchCatalogFrom, titlesByRank } = await import('../player-sim/catalog.ts');
  const catalog = await fetchCatalogFrom(target);
  if (catalog.titles.length === 0) {
    throw new OcdnError(ErrorCodes.CONFIG, `the catalog at ${catalogUrls(target).join(', ')} lists no titles: seed content first, or pass --titles id,id`);
  }
  return titlesByRank(catalog);
}

/**
 * QoE events go to Kafka through telemetry's producer with --brokers (spills to disk while the
 * broker is away), else to a JSON-lines file in the same format (`ocdn qoe` reads it offline).
 * Both are loaded on demand so a virtual run never loads kafkajs.
 */
async function openSink(brokers: string[] | undefined, eventsFile: string, spill: { dir: string; maxBytes: number }): Promise<EventSink> {
  const producer = await import('../telemetry/producer.ts');
  // Its log goes to stderr: stdout carries the summary (--json output must stay parseable).
  const log = pino({ level: process.env.OCDN_LOG_LEVEL ?? 'warn', base: { component: 'producer', pid: process.pid } }, process.stderr);
  if (brokers && brokers.length > 0)
    return producer.createProducer({ brokers, clientId: 'ocdn-play', log, spillFile: join(spill.dir, 'ocdn-play.jsonl'), maxSpillBytes: spill.maxBytes });
  return new producer.JsonLinesSink(eventsFile);
}

const pct = (x: number | null) => (x === null ? '-' : `${(x * 100).toFixed(2)}%`);
const ms = (x: number | null | undefined) => (x == null ? '-' : `${Math.round(x)} ms`);
const mbps = (x: number) => `${(x / 1e6).toFixed(2)} Mbit/s`;

export function formatSummary(s: RunSummary): string {
  const head = renderTable(
    [
      'sessions',
      'started',
      'start failures',
      'errors',
      'refused',
      'VST p50',
      'VST p95',
      'rebuffer',
      'stalls/min',
      'avg bitrate',
      'switches/min',
      'failovers',
      'bytes',
    ],
    [
      [
        s.sessions,
        s.started,
        s.startFailures,
        s.errors,
        s.refusedSessions,
        ms(s.vstP50Ms),
        ms(s.vstP95Ms),
        pct(s.rebufferRatio),
        s.stallsPerMin.toFixed(2),
        mbps(s.avgBitrate),
        s.switchesPerMin.toFixed(2),
        s.failovers,
        formatBytes(s.bytes),
      ],
    ],
  );
  const edges = renderTable(
    ['edge', 'bytes', 'requests', 'segments', 'hit ratio', 'byte hit ratio'],
    s.edges.map((e) => [e.id, formatBytes(e.bytes), e.requests, e.segments, pct(e.hitRatio), pct(e.byteHitRatio)]),
  );
  const exits = Object.entries(s.exitReasons)
    .filter(([, n]) => n > 0)
    .map(([k, n]) => `${k} ${n}`)
    .join(', ');
  const refused =
    s.refused.length === 0
      ? []
      : [
          '',
          renderTable(
            ['refused title', 'status', 'code', 'sessions', 'reason'],
            s.refused.map((r) => [r.title, r.status, r.code, r.sessions, r.reason]),
          ),
        ];
  const lost = Object.entries(s.eventsLost ?? {}).filter(([, n]) => n > 0);
  const losses =
    lost.length === 0 && s.sinkErrors === 0
      ? []
      : [`events lost: ${lost.map(([why, n]) => `${n} (${why})`).join(', ') || 'none'}; sink errors: ${s.sinkErrors}`];
  return [
    `${s.mode} run: ${s.players} players, abr ${s.abr}, network ${s.network}, seed ${s.seed}; ${(s.simulatedMs / 1000).toFixed(1)} s simulated in ${(s.wallMs / 1000).toFixed(1)} s, peak ${s.peakConcurrent} concurrent`,
    head,
    `exits: ${exits || 'none'}`,
    ...losses,
    ...refused,
    '',
    edges,
  ].join('\n');
}

export function registerPlay(program: Command): void {
  addDirOption(
    program

      .command('play')
      .description(
        'simulated HLS players: steer (or --edge), master → media playlists → per-segment ABR → download → buffer, ' +
          'with network traces, CMCD on every request, failover down the steering list, and QoE events ' +
          '(JSON lines to --events-file, or Kafka with --brokers). --virtual runs the same sessions on a simulated clock without sockets.',
      )
      .option('--players <n>', 'concurrent sessions [default 100]')
      .option('--ramp <time>', 'spread session starts over this [default 10s]')
      .option('--duration <time>', 'run length; sessions still playing then end "aborted" [default 60s]')
      .option('--abr <name>', `ABR algorithm: ${ABR_NAMES.join('|')} [default throughput]`)
      .option(
        '--network <trace>',
        'per-session bandwidth: const:5mbps | step:6mbps,1mbps@30s | walk[:3mbps] | markov[:on,off,onMean,offMean] | file:trace.json [default const:5mbps]',
      )
      .option('--rtt <time>', 'added round-trip time per request [default 20ms]')
      .option('--speed <x>', 'real mode: session time runs this many times faster than real time [default 1]')
      .option('--titles <spec>', 'zipf:<s> | uniform | id,id,… [default zipf:0.9]')
      .option('--steering <url>', "steering base URL (env OCDN_STEERING_URL) [default: the cluster's]")
      .option(
        '--edge <url>',
        'play from these edges instead of steering (repeatable or comma-separated; failover in this order). Players hold no token secret, so these edges must serve without URL tokens (edge serve --no-tokens); with tokens, play through --steering',
        collect,
      )
      .option('--brokers <list>', "Kafka brokers host:port,… for QoE events (env KAFKA_BROKERS) [default: the cluster's, except with --virtual]")
      .option('--events-file <path>', 'QoE events as JSON lines (appended) when --brokers is not given [default .ocdn/play-events.jsonl]')
      .option('--spill-dir <dir>', 'with --brokers: where events wait while the broker is unreachable (env OCDN_SPILL_DIR) [default .ocdn/spill]')
      .option('--spill-max-bytes <size>', 'with --brokers: cap on the spill file; past it events wait in memory, then count as lost [default 1GiB]')
      .option('--seed <n>', 'seed for traces, titles, watch times (and ids in --virtual) [default 42]')
      .option('--virtual', 'simulated clock and transfer model, no sockets')
      .option('--json', 'print the summary as JSON')
      .option('--cmcd <mode>', 'CMCD as query|headers|off [default query]')
      .option('--abr-cmsd', "throughput ABR heeds the edge's CMSD-Dynamic: estimate ≤ its etp, and no step up (one rung down) while it reports du")
      .option('--watch <time|full>', 'mean watch time (geometric drop-off), or full [default 120s]')
      .option('--no-loop', 'do not replace sessions that end before the run does')
      .option('--region <region>', 'client region sent to steering; a list (us-east,eu-west) spreads sessions over them (env OCDN_REGION) [default local]')
      .option('--max-buffer <time>', 'player buffer target [default 30s]')
      .option('--start-timeout <time>', 'a session not playing by then is a start failure [default 15s]')
      .option('--catalog-titles <n>', "real mode: draw from title-0001..N instead of reading the catalog (steering /v1/catalog, or the edge's /catalog.json)")
      .option('--virtual-titles <n>', '--virtual: number of synthetic titles [default 20]')
      .option('--virtual-edges <n>', '--virtual: number of edges [default 2]'),
  ).action(async (flags: Record<string, unknown>) => {
    // The cluster fills in steering and brokers, but never overrides a choice of --edge, and a
    // --virtual run (no sockets) stays off the cluster's Kafka unless told otherwise.
    const ctx = readContext(flags.dir);
    const own = flags.virtual === true ? {} : { ...ctx.values, ...(flags.edge !== undefined ? { steeringUrl: undefined } : {}) };
    const cfg = loadConfig(playSpec, flags, process.env, own);
    const problems: string[] = [];
    if (cfg.steering && cfg.edge && cfg.edge.length > 0) problems.push('--steering and --edge are alternatives: pick one');
    if (!cfg.virtual && !cfg.steering && !(cfg.edge && cfg.edge.length > 0))
      problems.push(
        `no steering: none given by --steering, OCDN_STEERING_URL or ${stateFile(ctx.dir)}; ${START_HINT}, or give --steering URL or --edge URL (or --virtual)`,
      );
    for (const e of cfg.edge ?? []) if (!/^https?:\/\/[^/]+/.test(e)) problems.push(`--edge: "${e}" is not an http(s) URL`);
    try {
      parseTraceSpec(cfg.network, { seed: cfg.seed });
    } catch (err) {
      problems.push((err as Error).message.replace(/^E_CONFIG: /, ''));
    }
    if (problems.length > 0) throw new ConfigError(problems);

    const target = playTarget(cfg);
    const needsCatalog = /^(zipf|uniform)/i.test(cfg.titles) && !cfg.virtual;
    const catalog = needsCatalog && target ? await loadCatalog(cfg.catalogTitles, target) : undefined;
    const sink = await openSink(cfg.brokers, cfg.eventsFile, { dir: cfg.spillDir, maxBytes: cfg.spillMaxBytes });
    const stop = new AbortController();
    const onSignal = () => stop.abort();
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    // --edge players carry no token: an edge answering 403 wants one, and the summary alone would not say so.
    let forbidden = 0;
    const onEvent = target && 'edges' in target ? (e: QoeEvent) => void (e.type === 'failover' && e.reason === 'http 403' && forbidden++) : undefined;
    let summary: RunSummary | undefined;
    let runError: unknown;
    let sinkError: string | undefined;
    try {
      const { runPlayers } = await import('../player-sim/runner.ts');
      ({ summary } = await runPlayers({
        players: cfg.players,
        rampMs: cfg.ramp,
        durationMs: cfg.duration,
        loop: cfg.loop,
        abr: cfg.abr as AbrName,
        network: cfg.network,
        rttMs: cfg.rtt,
        speed: cfg.speed,
        titles: cfg.titles,
        catalog,
        steering: target && 'steering' in target ? target.steering : undefined,
        edges: target && 'edges' in target ? [...target.edges] : undefined,
        sink,
        seed: cfg.seed,
        virtual: cfg.virtual,
        virtualCdn: { titles: cfg.virtualTitles, edges: cfg.virtualEdges },
        cmcd: cfg.cmcd as 'query' | 'headers' | 'off',
        abrCmsd: cfg.abrCmsd,
        watchMeanS: cfg.watch === 'full' ? 'full' : parseDuration(cfg.watch) / 1000,
        region: cfg.region,
        maxBufferS: cfg.maxBuffer / 1000,
        startTimeoutMs: cfg.startTimeout,
        signal: stop.signal,
        onEvent,
      }));
    } catch (err) {
      runError = err;
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      // close() flushes, and gives up on a sink that cannot deliver after its timeout, counting what it lost.
      await sink.close().catch((err: unknown) => (sinkError = describeError(err)));
    }
    if (!summary) throw runError;
    // What the sink lost while closing counts too; the summary is printed before any failure exit.
    summary.eventsLost = sink.lost?.() ?? summary.eventsLost;
    process.stdout.write(cfg.json ? `${JSON.stringify(summary, null, 2)}\n` : `${formatSummary(summary)}\n`);
    if (!cfg.json && !(cfg.brokers && cfg.brokers.length > 0)) process.stderr.write(`events: ${cfg.eventsFile}\n`);
    if (forbidden > 0)
      process.stderr.write(
        `warning: --edge answered 403 ${forbidden} times: it wants URL tokens, which players without steering do not have. ` +
          'Play edges started with --no-tokens, or play through --steering (it signs the URLs).\n',
      );
    const lostEvents = Object.values(summary.eventsLost).reduce((a, b) => a + b, 0);
    if (sinkError || lostEvents > 0 || summary.sinkErrors > 0)
      throw new OcdnError(
        ErrorCodes.BROKER_UNAVAILABLE,
        `QoE events not all delivered: ${lostEvents} lost, ${summary.sinkErrors} sink errors${sinkError ? `; closing the sink failed: ${sinkError}` : ''}`,
      );
  });
}

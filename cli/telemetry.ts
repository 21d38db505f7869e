import type { Command } from 'commander';
import { DEFAULT_PORTS } from '../common/cluster-context.ts';
import { addDirOption, explain, loadCommandConfig } from '../common/command-config.ts';
import { type ConfigOf, ConfigError } from '../common/config.ts';
import { CORS_ORIGINS_FIELD, CORS_ORIGINS_HELP, corsOriginsOption } from '../common/cors.ts';
import type { QoeMetrics, QoeResponse, QoeResult, QoeRow } from '../common/contracts.ts';
import { describeError, ErrorCodes, OcdnError } from '../common/errors.ts';
import { errorMessage } from '../common/http.ts';
import { createLogger } from '../common/log.ts';
import { Shutdown } from '../common/shutdown.ts';
import { formatBytes, parseDuration } from '../common/units.ts';
import { DEFAULT_BROKERS, topicNames } from '../telemetry/topics.ts';
import { DIMENSIONS } from '../telemetry/merge.ts';
import { renderTable } from '../common/table.ts';

const say = (line: string) => process.stderr.write(`ocdn: ${line}\n`);

const aggSpec = {
  brokers: { type: 'string', env: 'KAFKA_BROKERS', ctx: 'brokers', default: DEFAULT_BROKERS },
  port: { type: 'int', min: 0, max: 65_535, default: DEFAULT_PORTS.aggregator, env: 'OCDN_AGGREGATOR_PORT' },
  host: { type: 'string', default: '127.0.0.1' },
  window: { type: 'duration', min: 100, default: '10s' },
  grace: { type: 'duration', min: 0, default: '5s' },
  idle: { type: 'duration', min: 0, default: '5s' },
  provisional: { type: 'duration', min: 0, default: '1s' },
  group: { type: 'string', default: 'ocdn-aggregator' },
  topicPrefix: { type: 'string', flag: '--topic-prefix', default: '' },
  maxFutureSkew: { type: 'duration', min: 0, flag: '--max-future-skew', default: '5m' },
  maxEventAge: { type: 'duration', min: 1_000, flag: '--max-event-age', default: '168h' },
  maxMessageEvents: { type: 'int', min: 1, max: 1_000_000, flag: '--max-message-events', default: 1_000 },
  maxMessageBytes: { type: 'bytes', min: 1_024, flag: '--max-message-bytes', default: '1MiB' },
  stallAfter: { type: 'duration', min: 1_000, flag: '--stall-after', default: '60s' },
  ingest: { type: 'bool', env: 'OCDN_INGEST', default: true },
  ingestRate: { type: 'number', min: 0.1, max: 1_000_000, flag: '--ingest-rate', default: 50 },
  ingestGlobalRate: { type: 'number', min: 0.1, max: 10_000_000, flag: '--ingest-global-rate', default: 2_000 },
  spillDir: { type: 'string', flag: '--spill-dir', env: 'OCDN_SPILL_DIR', default: '.ocdn/spill' },
  spillMaxBytes: { type: 'bytes', flag: '--spill-max-bytes', default: '1GiB', min: 4096 },
  corsOrigins: CORS_ORIGINS_FIELD,
} as const;

/** The flags both the aggregator and `qoe verify` need so that they refuse the same events. */
const gateFlags = (c: Command) =>
  c
    .option('--max-future-skew <dur>', 'events dated further ahead of their arrival go to the DLQ [default 5m]')
    .option('--max-event-age <dur>', 'events dated further before their arrival go to the DLQ [default 168h, a week]')
    .option('--max-message-events <n>', 'a message with more lines is one DLQ record [default 1000]')
    .option('--max-message-bytes <size>', 'a larger message is one DLQ record [default 1MiB]');

const gateOf = (cfg: { maxFutureSkew: number; maxEventAge: number; maxMessageEvents: number; maxMessageBytes: number }) => ({
  eventTime: { maxFutureSkewMs: cfg.maxFutureSkew, maxEventAgeMs: cfg.maxEventAge },
  messageLimits: { maxEvents: cfg.maxMessageEvents, maxBytes: cfg.maxMessageBytes },
});

const qoeSpec = {
  url: { type: 'url', env: 'OCDN_AGGREGATOR_URL', ctx: 'aggregatorUrl', default: `http://127.0.0.1:${DEFAULT_PORTS.aggregator}` },
  by: { type: 'enum', values: DIMENSIONS, default: 'edge' },
  window: { type: 'duration', min: 100, default: '10s' },
  last: { type: 'duration', min: 100, default: '5m' },
  limit: { type: 'int', min: 1, max: 10_000, default: 20 },
} as const;

/** A qoe command's config (cluster context behind flags) and its query, whose failure says what it tried. */
function qoeQuery<S extends typeof qoeSpec>(spec: S, flags: Record<string, unknown>): { cfg: ConfigOf<S>; query: () => Promise<QoeResponse> } {
  const { cfg, ctx } = loadCommandConfig(spec, flags);
  const q = cfg as ConfigOf<typeof qoeSpec>;
  const query = () =>
    fetchQoe(q.url, { by: q.by, windowMs: q.window, lastMs: q.last }).catch((err: unknown) => {
      throw explain(err, [ErrorCodes.NOT_FOUND], qoeSpec, q, 'url', ctx);
    });
  return { cfg, query };
}

export async function fetchQoe(url: string, q: { by: string; windowMs: number; lastMs?: number; from?: number; to?: number }): Promise<QoeResponse> {
  const params = new URLSearchParams({ by: q.by, window: `${q.windowMs}ms` });
  if (q.lastMs !== undefined) params.set('last', `${q.lastMs}ms`);
  if (q.from !== undefined) params.set('from', String(q.from));
  if (q.to !== undefined) params.set('to', String(q.to));
  let res: Response;
  try {
    res = await fetch(`${url}/v1/qoe?${params}`, { signal: AbortSignal.timeout(5_000) });
  } catch (err) {
    throw new OcdnError(
      ErrorCodes.NOT_FOUND,
      `no aggregator answers at ${url}: ${((err as Error).cause as { code?: string } | undefined)?.code ?? describeError(err)}`,
    );
  }
  if (!res.ok) throw new OcdnError(ErrorCodes.BAD_REQUEST, `aggregator at ${url} answered ${res.status}: ${errorMessage(await res.text())}`);
  return (await res.json()) as QoeResponse;
}

const pct = (v: number | null) => (v === null ? '-' : `${(v * 100).toFixed(2)}%`);
const ms = (v: number | null) => (v === null ? '-' : `${Math.round(v)}`);
const kbps = (v: number | null) => (v === null ? '-' : `${Math.round(v / 1000)}`);
const num = (v: number | null, d = 2) => (v === null ? '-' : v.toFixed(d));

const COLUMNS: { head: string; get: (r: QoeRow) => string | number }[] = [
  { head: 'value', get: (r) => (r.value === '' ? '(none)' : r.value) },
  { head: 'events', get: (r) => r.events },
  { head: 'sessions', get: (r) => r.sessions },
  { head: 'vst p50', get: (r) => ms(r.vstP50Ms) },
  { head: 'vst p95', get: (r) => ms(r.vstP95Ms) },
  { head: 'vst p99', get: (r) => ms(r.vstP99Ms) },
  { head: 'start fail', get: (r) => r.startFailures },
  { head: 'ebvs', get: (r) => r.exitsBeforeStart },
  { head: 'rebuf', get: (r) => pct(r.rebufferRatio) },
  { head: 'stalls/min', get: (r) => num(r.stallsPerMin) },
  { head: 'kbps', get: (r) => kbps(r.avgBitrate) },
  { head: 'sw/min', get: (r) => num(r.switchesPerMin) },
  { head: 'err', get: (r) => pct(r.errorRate) },
  { head: 'hit', get: (r) => pct(r.cacheHitRatio) },
  { head: 'late', get: (r) => r.late },
  { head: 'dup', get: (r) => r.duplicates },
];

export function qoeTable(rows: QoeRow[]): string {
  // renderTable right-aligns a column when the first row's cell is a number: keep types uniform.
  return renderTable(
    COLUMNS.map((c) => c.head),
    rows.map((r) => COLUMNS.map((c) => String(c.get(r)))),
  );
}

const CSV_FIELDS: (keyof QoeMetrics)[] = [
  'events',
  'sessions',
  'sessionEnds',
  'vstP50Ms',
  'vstP95Ms',
  'vstP99Ms',
  'vstMeanMs',
  'startups',
  'startFailures',
  'startFailureRate',
  'exitsBeforeStart',
  'ebvsRate',
  'playS',
  'stallS',
  'rebufferRatio',
  'stalls',
  'stallsPerMin',
  'avgBitrate',
  'switches',
  'switchesPerMin',
  'errors',
  'fatalErrors',
  'errorRate',
  'failovers',
  'segments',
  'cacheHitRatio',
  'segmentBytes',
  'ttfbMeanMs',
  'duplicates',
  'late',
];

function csvCell(v: unknown): string {
  const s = v === null || v === undefined ? '' : String(v);
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export function qoeCsv(r: QoeResult): string {
  const lines = [['window_start', 'window_end', 'final', r.by, ...CSV_FIELDS].join(',')];
  for (const w of r.windows) {
    for (const row of w.rows) lines.push([w.start, w.end, w.final, csvCell(row.value), ...CSV_FIELDS.map((f) => csvCell(row[f]))].join(','));
  }
  return `${lines.join('\n')}\n`;
}

const SPARK = '▁▂▃▄▅▆▇█';
export function sparkline(values: (number | null)[]): string {
  const nums = values.filter((v): v is number => v !== null);
  if (nums.length === 0) return '';
  const max = Math.max(...nums);
  const min = Math.min(0, ...nums);
  return values.map((v) => (v === null ? ' ' : SPARK[max === min ? 0 : Math.min(7, Math.floor(((v - min) / (max - min)) * 7.999))])).join('');
}

function watchScreen(r: QoeResult, limit: number): string {
  const top = r.totals.slice(0, limit);
  const rows = top.map((t) => {
    const series = r.windows.map((w) => w.rows.find((x) => x.value === t.value));
    return [
      t.value === '' ? '(none)' : t.value,
      String(t.events),
      pct(t.rebufferRatio),
      sparkline(series.map((s) => s?.rebufferRatio ?? null)),
      ms(t.vstP50Ms),
      sparkline(series.map((s) => s?.vstP50Ms ?? null)),
      pct(t.cacheHitRatio),
    ];
  });
  const last = r.windows.at(-1);
  const head = `QoE by ${r.by}, ${r.windows.length} windows of ${r.windowMs / 1000}s${last ? `, newest ${new Date(last.start).toISOString()}${last.final ? '' : ' (open)'}` : ''} — Ctrl-C to stop`;
  return `${head}\n\n${renderTable([r.by, 'events', 'rebuffer', 'rebuffer trend', 'vst p50', 'vst p50 trend', 'hit'], rows)}\n`;
}

/** `ocdn qoe misses --json`: bytes per miss class for each value, and what the join could not classify. */
export interface MissReport {
  by: string;
  from: number | null;
  to: number | null;
  rows: { value: string; localHitBytes: number; contentMissBytes: number; healthMissBytes: number; otherMissBytes: number }[];
  /** Over the whole range (every edge): accesses with no decision for their session, and late ones. */
  unmatchedAccesses: number;
  unmatchedAccessBytes: number;
  lateAccesses: number;
}

export function missReport(r: QoeResult, all: QoeResult): MissReport {
  const classified = (t: QoeRow) => t.localHitBytes + t.contentMissBytes + t.healthMissBytes + t.otherMissBytes;
  const rows = r.totals
    .filter((t) => classified(t) > 0)
    .sort((a, b) => classified(b) - classified(a) || a.value.localeCompare(b.value))
    .map((t) => ({
      value: t.value,
      localHitBytes: t.localHitBytes,
      contentMissBytes: t.contentMissBytes,
      healthMissBytes: t.healthMissBytes,
      otherMissBytes: t.otherMissBytes,
    }));
  const whole = all.totals[0];
  return {
    by: r.by,
    from: r.from,
    to: r.to,
    rows,
    unmatchedAccesses: whole?.unmatchedAccesses ?? 0,
    unmatchedAccessBytes: whole?.unmatchedAccessBytes ?? 0,
    lateAccesses: whole?.lateAccesses ?? 0,
  };
}

function missTable(m: MissReport): string {
  const share = (n: number, d: number) => (d > 0 ? `${((n / d) * 100).toFixed(1)}%` : '-');
  return renderTable(
    [m.by, 'local hit', 'content miss', 'health miss', 'other miss', 'local hit share'],
    m.rows.map((r) => {
      const total = r.localHitBytes + r.contentMissBytes + r.healthMissBytes + r.otherMissBytes;
      return [
        r.value,
        formatBytes(r.localHitBytes),
        formatBytes(r.contentMissBytes),
        formatBytes(r.healthMissBytes),
        formatBytes(r.otherMissBytes),
        share(r.localHitBytes, total),
      ];
    }),
  );
}

export function registerTelemetry(program: Command): void {
  // ---- telemetry aggregate -------------------------------------------------------------
  const telemetry = program.command('telemetry').description('QoE telemetry pipeline');
  telemetry
    .command('aggregate')
    .description('consume QoE events, aggregate them in event-time windows, serve /v1/qoe, /healthz, /metrics')
    .option('--brokers <list>', `Kafka brokers host:port,… (env KAFKA_BROKERS) [default: the cluster's, else ${DEFAULT_BROKERS}]`)
    .option('--port <port>', `HTTP port (env OCDN_AGGREGATOR_PORT) [default ${DEFAULT_PORTS.aggregator}]`)
    .option('--host <host>', 'HTTP bind address [default 127.0.0.1]')
    .option('--window <dur>', 'tumbling window (rolled up to 1 min on query) [default 10s]')
    .option('--grace <dur>', 'how long after its end a window waits for stragglers [default 5s]')
    .option('--idle <dur>', 'after this long without events, event time follows the clock [default 5s]')
    .option('--provisional <dur>', 'publish open windows this often (0 = only closed ones) [default 1s]')
    .option('--group <id>', 'consumer group (instances with one group share the partitions) [default ocdn-aggregator]')
    .option('--topic-prefix <p>', 'prefix for the topic names [default none]')
    .option('--stall-after <dur>', '/healthz answers 503 when a partition with lag has not committed for this long [default 60s]')
    .option('--no-ingest', 'do not serve POST /v1/events (browser QoE beacons) (env OCDN_INGEST=false)')
    .option('--ingest-rate <n>', 'POST /v1/events requests per second one client address may send, bursts twice that; 429 past it [default 50]')
    .option('--ingest-global-rate <n>', 'POST /v1/events requests per second over all clients [default 2000]')
    .option('--spill-dir <dir>', 'where beacon events wait while the broker is unreachable (env OCDN_SPILL_DIR) [default .ocdn/spill]')
    .option('--spill-max-bytes <size>', 'cap on that spill file; past it events wait in memory, then the ingest answers 503 [default 1GiB]')
    .option('--cors-origins <list>', CORS_ORIGINS_HELP);
  gateFlags(telemetry.commands.at(-1)!);
  addDirOption(telemetry.commands.at(-1)!).action(async (flags: Record<string, unknown>) => {
    // Commander sets ingest=true when --no-ingest is absent: only the explicit false is a flag, else env and default decide.
    const { cfg } = loadCommandConfig(aggSpec, { ...flags, ingest: flags.ingest === false ? false : undefined });
    const problems: string[] = [];
    const corsOrigins = corsOriginsOption(cfg.corsOrigins, problems);
    if (problems.length > 0) throw new ConfigError(problems);
    const log = createLogger('aggregator');
    // Loaded once the flags are good: the CLI registering the command does not pay for it.
    const { startAggregator } = await import('../telemetry/aggregator.ts');
    const agg = await startAggregator({
      brokers: cfg.brokers,
      port: cfg.port,
      host: cfg.host,
      windowMs: cfg.window,
      graceMs: cfg.grace,
      idleMs: cfg.idle,
      provisionalMs: cfg.provisional,
      groupId: cfg.group,
      topics: topicNames(cfg.topicPrefix),
      stallMs: cfg.stallAfter,
      ...gateOf(cfg),
      ingest: cfg.ingest,
      ingestRate: { perClient: cfg.ingestRate, global: cfg.ingestGlobalRate },
      spillDir: cfg.spillDir,
      spillMaxBytes: cfg.spillMaxBytes,
      corsOrigins,
      log,
    });
    say(`aggregator on ${agg.url} (try ${agg.url}/v1/qoe?by=edge&window=10s&last=5m)`);
    const shutdown = new Shutdown({ log, hookTimeoutMs: 20_000 });
    shutdown.add('aggregator', () => agg.close());
    shutdown.installSignalHandlers();
    await new Promise<void>(() => undefined);
  });

  // ---- qoe -----------------------------------------------------------------------------
  const qoe = program.command('qoe').description('show QoE aggregates from a running aggregator (top, watch, report, verify)');
  const common = (c: Command) =>
    addDirOption(c)
      .option('--url <url>', `aggregator URL (env OCDN_AGGREGATOR_URL) [default: the cluster's, else http://127.0.0.1:${DEFAULT_PORTS.aggregator}]`)
      .option('--by <dim>', `dimension: ${DIMENSIONS.join('|')}`, 'edge')
      .option('--window <dur>', "window size (a multiple of the aggregator's, e.g. 10s or 1m)", '10s')
      .option('--last <dur>', 'how far back from the newest window', '5m');

  common(qoe.command('top').description('table of the dimension values over the range, busiest first'))
    .option('--limit <n>', 'rows', '20')
    .action(async (flags: Record<string, unknown>) => {
      const { cfg, query } = qoeQuery(qoeSpec, flags);
      const r = await query();
      if (r.totals.length === 0) {
        say(`no aggregates yet at ${cfg.url}`);
        return;
      }
      const w = r.windows;
      process.stdout.write(
        `QoE by ${r.by} over ${w.length} windows of ${r.windowMs / 1000}s${w.length ? ` (${new Date(w[0]!.start).toISOString()} → ${new Date(w.at(-1)!.end).toISOString()})` : ''}\n\n`,
      );
      process.stdout.write(`${qoeTable(r.totals.slice(0, cfg.limit))}\n`);
    });

  common(qoe.command('watch').description('live view with sparklines of rebuffer ratio and video start time'))
    .option('--limit <n>', 'rows', '10')
    .option('--interval <dur>', 'refresh period', '2s')
    .option('--once', 'print one screen and exit')
    .action(async (flags: Record<string, unknown>) => {
      const { cfg, query } = qoeQuery(qoeSpec, flags);
      const every = parseDuration(String(flags.interval ?? '2s'));
      for (;;) {
        let screen: string;
        try {
          screen = watchScreen(await query(), cfg.limit);
        } catch (err) {
          if (flags.once) throw err;
          screen = `waiting for the aggregator: ${describeError(err)}\n`;
        }
        if (flags.once) {
          process.stdout.write(screen);
          return;
        }
        process.stdout.write(`\x1b[2J\x1b[H${screen}`);
        await new Promise((r) => setTimeout(r, every));
      }
    });

  common(qoe.command('report').description('every window and value in the range'))
    .option('--format <fmt>', 'table|json|csv', 'table')
    .action(async (flags: Record<string, unknown>) => {
      const { cfg, query } = qoeQuery({ ...qoeSpec, format: { type: 'enum', values: ['table', 'json', 'csv'], default: 'table' } } as const, flags);
      const r = await query();
      if (cfg.format === 'json') process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
      else if (cfg.format === 'csv') process.stdout.write(qoeCsv(r));
      else {
        for (const w of r.windows) {
          process.stdout.write(`\n${new Date(w.start).toISOString()} +${r.windowMs / 1000}s${w.final ? '' : ' (open)'}\n${qoeTable(w.rows)}\n`);
        }
        if (r.windows.length === 0) say(`no aggregates in the range at ${cfg.url}`);
      }
    });

  addDirOption(qoe.command('misses'))
    .description(
      'why bytes missed: bytes edges served per class (local hit, content miss, health miss, other miss), from steering decisions joined with edge access records',
    )
    .option('--url <url>', `aggregator URL (env OCDN_AGGREGATOR_URL) [default: the cluster's, else http://127.0.0.1:${DEFAULT_PORTS.aggregator}]`)
    .option('--by <dim>', 'dimension: edge|region|title (region = the client site steering decided for)', 'edge')
    .option('--window <dur>', "the aggregator's window (or a multiple)", '10s')
    .option('--last <dur>', 'how far back from the newest window', '10m')
    .option('--json', 'print { rows: [ { value, localHitBytes, contentMissBytes, healthMissBytes, otherMissBytes } ], unmatched…, late… }')
    .action(async (flags: Record<string, unknown>) => {
      const spec = {
        ...qoeSpec,
        by: { type: 'enum', values: ['edge', 'region', 'title'], default: 'edge' },
        last: { ...qoeSpec.last, default: '10m' },
      } as const;
      const { cfg, ctx } = loadCommandConfig(spec, flags);
      const ask = (by: string) =>
        fetchQoe(cfg.url, { by, windowMs: cfg.window, lastMs: cfg.last }).catch((err: unknown) => {
          throw explain(err, [ErrorCodes.NOT_FOUND], spec, cfg, 'url', ctx);
        });
      const [r, all] = await Promise.all([ask(cfg.by), ask('all')]);
      const report = missReport(r, all);
      if (flags.json) {
        process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
        return;
      }
      if (report.rows.length === 0) say(`no classified bytes yet at ${cfg.url} (steering and edges publish records only when given --brokers)`);
      else process.stdout.write(`${missTable(report)}\n`);
      say(`${report.unmatchedAccesses} access records without a steering decision (${formatBytes(report.unmatchedAccessBytes)}), ${report.lateAccesses} late`);
    });

  gateFlags(qoe.command('verify'))
    .description('recount the aggregates from the raw events topic and compare them with the live aggregator')
    .option('--url <url>', "aggregator URL (env OCDN_AGGREGATOR_URL) [default: the cluster's]")
    .option('--brokers <list>', "Kafka brokers host:port,… (env KAFKA_BROKERS) [default: the cluster's]")
    .option('--dir <dir>', 'cluster dir whose cluster.json fills in endpoints (env OCDN_DIR) [default ./.ocdn]')
    .option('--window <dur>', "the aggregator's window", '10s')
    .option('--grace <dur>', "the aggregator's grace", '5s')
    .option('--last <dur>', 'only the newest part of the range')
    .option('--from <ms>', 'range start, ms since epoch')
    .option('--to <ms>', 'range end, ms since epoch')
    .option('--topic-prefix <p>', 'prefix for the topic names', '')
    .option('--all-windows', 'compare open windows too (by default only windows the aggregator has closed)')
    .action(async (flags: Record<string, unknown>) => {
      const { cfg } = loadCommandConfig(
        {
          url: qoeSpec.url,
          brokers: aggSpec.brokers,
          window: aggSpec.window,
          grace: aggSpec.grace,
          last: { type: 'duration', min: 100 },
          from: { type: 'int', min: 0 },
          to: { type: 'int', min: 0 },
          topicPrefix: aggSpec.topicPrefix,
          maxFutureSkew: aggSpec.maxFutureSkew,
          maxEventAge: aggSpec.maxEventAge,
          maxMessageEvents: aggSpec.maxMessageEvents,
          maxMessageBytes: aggSpec.maxMessageBytes,
        } as const,
        flags,
      );
      const { verify } = await import('../telemetry/verify.ts');
      const report = await verify({
        url: cfg.url,
        brokers: cfg.brokers,
        topics: topicNames(cfg.topicPrefix),
        windowMs: cfg.window,
        graceMs: cfg.grace,
        from: cfg.from,
        to: cfg.to,
        lastMs: cfg.last,
        finalOnly: !flags.allWindows,
        ...gateOf(cfg),
      });
      process.stdout.write(
        `recounted ${report.events} events (${report.invalid} invalid) from the raw topic; compared ${report.compared} window×value rows over 7 dimensions\n`,
      );
      if (report.mismatches.length === 0) {
        process.stdout.write('live aggregates equal the recount\n');
        return;
      }
      const rows = report.mismatches
        .slice(0, 50)
        .map((mm) => [mm.dim, new Date(mm.window).toISOString(), mm.value, mm.field, String(mm.live ?? '-'), String(mm.recount ?? '-')]);
      process.stdout.write(`${renderTable(['dim', 'window', 'value', 'field', 'live', 'recount'], rows)}\n`);
      throw new OcdnError(ErrorCodes.INTERNAL, `${report.mismatches.length} differences between live aggregates and the recount`);
    });
}

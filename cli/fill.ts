import type { Command } from 'commander';
import { loadConfig } from '../common/config.ts';
import { type ClusterState, readContext, requireCluster } from '../common/cluster-context.ts';
import { ErrorCodes, OcdnError } from '../common/errors.ts';
import { createLogger } from '../common/log.ts';
import { Shutdown } from '../common/shutdown.ts';
import { renderTable } from '../common/table.ts';
import { formatBytes, parseBytes } from '../common/units.ts';
import type { CycleReport } from '../scripts/fill-controller.ts';
import { describeSource, describeWindow, parseCopies, parseWindow } from '../scripts/fill-plan.ts';

const say = (line: string) => process.stderr.write(`ocdn: ${line}\n`);
const DIR_HELP = 'cluster dir (env OCDN_DIR) [default ./.ocdn]';
const requireState = (dirFlag: unknown): ClusterState => requireCluster(readContext(dirFlag));

/** Options of the fill controller shared by plan and run. */
const controllerSpec = {
  top: { type: 'int', min: 1, max: 10_000, default: 10 },
  copies: { type: 'string', default: '2,1' },
  window: { type: 'string', default: 'always' },
  budget: { type: 'bytes', min: 1, default: '10GB' },
  rate: { type: 'string', default: '50MB' },
  recent: { type: 'duration', min: 1000, default: '15m' },
  deadline: { type: 'duration', min: 1000, default: '10m' },
} as const;

function withControllerOptions(c: Command): Command {
  return c
    .option('--top <n>', 'titles in the manifests', '10')
    .option('--copies <list>', 'copies per site by popularity tier: the top is cut in as many equal tiers, e.g. 3,2,1', '2,1')
    .option('--window <HH:MM-HH:MM|always>', 'fill only inside this daily span of local time', 'always')
    .option('--budget <bytes>', 'bytes one window may fill, counted by the controller', '10GB')
    .option('--rate <bytes/s>', "rate asked of each fill job; each edge's --fill-rate-cap bounds all its fills together", '50MB')
    .option('--recent <time>', 'span of recent demand and content misses (from the aggregator)', '15m')
    .option('--deadline <time>', 'busy edges (429) are asked again until this long has passed, per cycle', '10m')
    .option('--json', 'print JSON')
    .option('--dir <dir>', DIR_HELP);
}

// What the commands run is imported when one runs, so `--help` and a mistyped flag load none of it.
const controllerOps = () => import('../scripts/fill-controller.ts');
const fillOps = () => import('../scripts/fill.ts');

async function makeController(flags: Record<string, unknown>, log?: ReturnType<typeof createLogger>) {
  const cfg = loadConfig(controllerSpec, flags);
  const [{ FillController }, { fetchCatalog }] = await Promise.all([controllerOps(), import('../scripts/catalog-client.ts')]);
  const state = requireState(flags.dir);
  const copies = parseCopies(cfg.copies);
  const window = parseWindow(cfg.window);
  const controller = new FillController({
    steeringUrl: state.steeringUrl,
    aggregatorUrl: state.aggregatorUrl,
    catalog: async () => {
      const catalog = await fetchCatalog(state.s3Endpoint, state.bucket);
      if (!catalog) throw new OcdnError(ErrorCodes.USAGE, 'the bucket has no catalog.json yet: run "ocdn content seed" first');
      return catalog;
    },
    adminToken: state.adminToken,
    top: cfg.top,
    copies,
    window,
    budgetBytes: cfg.budget,
    bytesPerSecond: parseBytes(cfg.rate.replace(/\/s$/i, '')),
    recentMs: cfg.recent,
    deadlineMs: cfg.deadline,
    log,
    onRetry: (job, err, delayMs) =>
      say(`${job.edgeId} cannot take ${job.title} yet (${err instanceof Error ? err.message : String(err)}); asking again in ${Math.ceil(delayMs / 1000)} s`),
  });
  return { controller, cfg, state, window };
}

async function printCycle(r: CycleReport, json: boolean, after: { bytes: number | undefined; spanMs: number } | undefined): Promise<void> {
  const { PLAN_HEADERS, planJson, planRows } = await controllerOps();
  const effect = {
    contentMissBytesBefore: r.contentMissBytesBefore ?? null,
    ...(after ? { contentMissBytesAfter: after.bytes ?? null, afterSpanMs: after.spanMs } : {}),
  };
  if (json) {
    const out = {
      at: r.at,
      windowOpen: r.windowOpen,
      held: r.held,
      noRoom: r.noRoom,
      plan: planJson(r.plan),
      admitted: r.admitted.length,
      deferred: r.deferred.length,
      done: r.done.map((d) => ({ edge: d.edgeId, title: d.title, bytes: d.bytesFetched ?? null, fromUpstream: d.fromUpstream ?? 0, attempts: d.attempts })),
      left: r.left.map((l) => ({ edge: l.edgeId, title: l.title, status: l.status ?? null, reason: l.reason })),
      bytesFilled: r.bytesFilled,
      budgetLeft: r.budgetLeft,
      effect,
    };
    process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
    return;
  }
  const admitted = new Set(r.admitted);
  process.stdout.write(`${renderTable(PLAN_HEADERS, planRows(r.plan, admitted))}\n`);
  say(
    `window ${r.windowOpen ? 'open' : 'closed: nothing moved'}; ${r.held} manifest lines already held, ${r.plan.length} to fill, ${r.admitted.length} in budget${r.noRoom ? `, ${r.noRoom} copies with no edge room (80% of capacity)` : ''}`,
  );
  if (r.done.length)
    process.stdout.write(
      `\nfilled (${r.done.length}, ${formatBytes(r.bytesFilled)}):\n${renderTable(
        ['edge', 'title', 'bytes', 'keys from upstream', 'attempts'],
        r.done.map((d) => [d.edgeId, d.title, d.bytesFetched ?? '-', d.fromUpstream ?? 0, d.attempts]),
      )}\n`,
    );
  if (r.left.length)
    process.stdout.write(
      `\nnot filled (${r.left.length}):\n${renderTable(
        ['edge', 'title', 'status', 'reason'],
        r.left.map((l) => [l.edgeId, l.title, l.status ?? '-', l.reason]),
      )}\n`,
    );
  say(`budget left in this window: ${formatBytes(r.budgetLeft)}`);
  if (effect.contentMissBytesBefore !== null || after)
    say(
      `content-miss bytes of the filled titles: ${effect.contentMissBytesBefore ?? 'n/a'} over the last span before` +
        (after ? `, ${after.bytes ?? 'n/a'} in the ${Math.round(after.spanMs / 1000)} s after` : ''),
    );
}

export function registerFill(program: Command): void {
  const fill = program
    .command('fill')
    .enablePositionalOptions()
    .description(
      'prefetch the most wanted titles (recent demand from the aggregator, then catalog rank) into the edges steering would pick for them; "fill plan" and "fill run" are the fill controller (copies per site, window, budget, peer sources)',
    )
    .option('--top <n>', 'how many titles', '10')
    .option('--rate <bytes/s>', 'fill rate per edge, e.g. 50MB', '50MB')
    .option('--recent <time>', 'titles players asked for in this span (from the aggregator) go first; the catalog rank orders the rest', '15m')
    .option('--deadline <time>', 'edges at their limit of running fills (429) are asked again until this long has passed', '10m')
    .option('--dir <dir>', DIR_HELP)
    .action(async (flags: Record<string, unknown>) => {
      const cfg = loadConfig(
        {
          top: { type: 'int', min: 1, default: 10 },
          deadline: { type: 'duration', min: 1000, default: '10m' },
          rate: { type: 'string', default: '50MB' },
          recent: { type: 'duration', min: 1000, default: '15m' },
        } as const,
        flags,
      );
      const rate = parseBytes(cfg.rate.replace(/\/s$/i, ''));
      const state = requireState(flags.dir);
      const [{ fetchCatalog }, { proactiveFill, recentDemand }] = await Promise.all([import('../scripts/catalog-client.ts'), fillOps()]);
      const catalog = await fetchCatalog(state.s3Endpoint, state.bucket);
      if (!catalog) throw new OcdnError(ErrorCodes.USAGE, 'the bucket has no catalog.json yet: run "ocdn content seed" first');
      const edgeComps = state.components.filter((c) => c.kind === 'edge');
      const regions = [...new Set(edgeComps.map((c) => c.region ?? ''))].filter(Boolean);
      const demand = await recentDemand(state.aggregatorUrl, cfg.recent);
      const result = await proactiveFill({
        catalog,
        top: cfg.top,
        bytesPerSecond: rate,
        steeringUrl: state.steeringUrl,
        regions,
        edges: edgeComps.map((c) => ({ id: c.name, url: c.url })),
        adminToken: state.adminToken,
        demand,
        deadlineMs: cfg.deadline,
        onRetry: (job, err, delayMs) =>
          say(
            `${job.edgeId} cannot take ${job.title} yet (${err instanceof Error ? err.message : String(err)}); asking again in ${Math.ceil(delayMs / 1000)} s`,
          ),
      });
      process.stdout.write(
        `${renderTable(
          ['title', 'why', 'edge', 'status', 'detail'],
          result.done.map((p) => [p.title, p.why, p.edgeId, p.status, p.detail]),
        )}\n`,
      );
      if (result.left.length)
        process.stdout.write(
          `\nnot filled (${result.left.length}):\n${renderTable(
            ['title', 'edge', 'status', 'attempts', 'reason'],
            result.left.map((p) => [p.title, p.edgeId, p.status ?? '-', p.attempts, p.reason]),
          )}\n`,
        );
      // Non-zero only when something was left unfilled.
      if (result.left.length) process.exitCode = 1;
    });

  withControllerOptions(
    fill
      .command('plan')
      .description(
        "the fill controller's plan now, nothing moved: per edge the titles it lacks (top by recent demand and content misses, then catalog rank; copies per site by tier on the edges steering hashes them to), the source (a site peer holding it, the shield, S3) and the bytes",
      ),
  ).action(async (flags: Record<string, unknown>) => {
    const { controller, window } = await makeController(flags);
    const { PLAN_HEADERS, planJson, planRows } = await controllerOps();
    const p = await controller.plan();
    if (flags.json) {
      process.stdout.write(
        `${JSON.stringify({ windowOpen: p.windowOpen, window: describeWindow(window), held: p.held, budgetLeft: p.budgetLeft, plan: planJson(p.plan) }, null, 2)}\n`,
      );
      return;
    }
    process.stdout.write(`${renderTable(PLAN_HEADERS, planRows(p.plan))}\n`);
    const bytes = p.plan.reduce((s, f) => s + f.bytes, 0);
    say(
      `window ${describeWindow(window)} is ${p.windowOpen ? 'open' : 'closed'}; ${p.held} already held; ${p.plan.length} fills, ${formatBytes(bytes)}; by source: ${countBy(p.plan.map((f) => describeSource(f.source).split(' ')[0]!))}`,
    );
  });

  withControllerOptions(
    fill
      .command('run')
      .description(
        "one fill controller cycle (or one every --every, with /healthz and /metrics): inside the window, fill what the window's budget admits; a 429 is retried until --deadline, never skipped",
      )
      .option('--every <time>', 'long-running: a cycle this often, until SIGTERM')
      .option('--port <port>', 'long-running: /healthz and /metrics here (0 = any free port)', '0')
      .option('--measure-after <time>', "one cycle: wait this long after filling and report the filled titles' content-miss bytes over that span"),
  ).action(async (flags: Record<string, unknown>) => {
    const extra = loadConfig(
      {
        every: { type: 'duration', min: 1000 },
        port: { type: 'int', min: 0, max: 65_535, default: 0 },
        measureAfter: { type: 'duration', flag: '--measure-after', min: 1000 },
      } as const,
      flags,
    );
    if (extra.every !== undefined) {
      const log = createLogger('fill');
      const { controller } = await makeController(flags, log);
      const { serveFillController } = await controllerOps();
      const svc = await serveFillController(controller, { everyMs: extra.every, port: extra.port, log });
      log.info({ url: svc.url, everyMs: extra.every }, 'fill controller running');
      const shutdown = new Shutdown({ log });
      shutdown.add('fill controller', () => svc.close());
      shutdown.installSignalHandlers();
      return;
    }
    const { controller, state } = await makeController(flags);
    const r = await controller.cycle();
    let after: { bytes: number | undefined; spanMs: number } | undefined;
    if (extra.measureAfter !== undefined && r.done.length > 0) {
      await new Promise((res) => setTimeout(res, extra.measureAfter));
      const [{ recentDemand }, { contentMissOf }] = await Promise.all([fillOps(), controllerOps()]);
      const demand = await recentDemand(state.aggregatorUrl, extra.measureAfter);
      after = {
        bytes: contentMissOf(
          demand,
          r.done.map((d) => d.title),
        ),
        spanMs: extra.measureAfter,
      };
    }
    await printCycle(r, flags.json === true, after);
    if (r.left.length) process.exitCode = 1;
  });
}

function countBy(xs: string[]): string {
  const m = new Map<string, number>();
  for (const x of xs) m.set(x, (m.get(x) ?? 0) + 1);
  return [...m].map(([k, v]) => `${k} ${v}`).join(', ') || 'none';
}

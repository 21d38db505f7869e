import type { Server } from 'node:http';
import { Counter, Gauge, type Registry } from 'prom-client';
import { type Catalog, type EdgeList, MAX_HOLDS_QUERY } from '../common/contracts.ts';
import { describeError, ErrorCodes, OcdnError } from '../common/errors.ts';
import { closeServer, listen, sendJson } from '../common/http.ts';
import { createHardenedServer } from '../common/http-server.ts';
import type { Logger } from '../common/log.ts';
import { createRegistry, sendMetrics } from '../common/metrics.ts';
import { type FillDone, type FillJob, type FillLeft, recentDemand, runFillPlan, type TitleDemand } from './fill.ts';
import { describeSource, type FillEdge, type FillWindow, type PlannedFill, planFills, windowOpenedAt, wireSource, withinBudget } from './fill-plan.ts';

/**
 * The fill controller's cycle, as Open Connect fills: observe (catalog, demand and content
 * misses from the aggregator, inventories from steering), plan (fill-plan.ts), and inside the
 * window push what the budget admits, each edge pacing itself under its own rate cap.
 */

export interface FillControllerOptions {
  steeringUrl: string;
  aggregatorUrl?: string;
  catalog: () => Promise<Catalog>;
  adminToken: string;
  top: number;
  copies: readonly number[];
  window: FillWindow;
  /** Bytes one window may fill, counted by the controller across its cycles. */
  budgetBytes: number;
  /** Rate asked of each job; the edge's own cap (--fill-rate-cap) bounds all its jobs together. */
  bytesPerSecond: number;
  /** Span of recent demand and content misses. */
  recentMs: number;
  /** A cycle gives up retrying busy edges at this point. */
  deadlineMs: number;
  log?: Logger;
  now?: () => Date;
  onRetry?: (job: FillJob, err: unknown, delayMs: number) => void;
}

export interface CycleReport {
  at: string;
  windowOpen: boolean;
  /** Every fill the plan wants, admitted or not (edge, title, copies, source, bytes). */
  plan: PlannedFill[];
  /** Manifest lines the edges already held. */
  held: number;
  /** Copies no edge of their site had room for (FILL_SHARE of its capacity). */
  noRoom: number;
  admitted: PlannedFill[];
  /** Over this window's budget: left for the next window. */
  deferred: PlannedFill[];
  done: FillDone[];
  left: FillLeft[];
  /** Bytes the edges reported pulling this cycle, and what the window has left. */
  bytesFilled: number;
  budgetLeft: number;
  /** Content-miss bytes of the titles filled, over the recent span before the cycle (when the aggregator has them). */
  contentMissBytesBefore: number | undefined;
}

/** Steering's edges, each with which of `titles` its inventory holds. */
export async function observeEdges(steeringUrl: string, titles: readonly string[]): Promise<FillEdge[]> {
  const base = steeringUrl.replace(/\/+$/, '');
  const holds = new Map<string, Set<string>>();
  let rows: EdgeList['edges'] = [];
  const chunks: string[][] = [];
  for (let i = 0; i < titles.length; i += MAX_HOLDS_QUERY) chunks.push(titles.slice(i, i + MAX_HOLDS_QUERY));
  if (chunks.length === 0) chunks.push([]);
  for (const chunk of chunks) {
    const res = await fetch(`${base}/v1/edges?holds=${chunk.map(encodeURIComponent).join(',')}`, { signal: AbortSignal.timeout(5_000) });
    if (!res.ok) throw new OcdnError(ErrorCodes.NO_EDGE, `steering answered ${res.status} for /v1/edges: ${(await res.text()).slice(0, 200)}`);
    rows = ((await res.json()) as EdgeList).edges;
    for (const r of rows) for (const t of r.holds ?? []) (holds.get(r.id) ?? holds.set(r.id, new Set()).get(r.id)!).add(t);
  }
  return rows.map((r) => ({
    id: r.id,
    url: r.url,
    region: r.region,
    healthy: r.healthy,
    capacityBytes: r.capacityBytes + (r.diskCapacityBytes ?? 0),
    ...(r.parent ? { parent: r.parent } : {}),
    holds: holds.get(r.id) ?? new Set(),
  }));
}

/** Sum of content-miss bytes of `titles`; undefined when the aggregator does not report them. */
export function contentMissOf(demand: ReadonlyMap<string, TitleDemand>, titles: Iterable<string>): number | undefined {
  let sum: number | undefined;
  for (const t of new Set(titles)) {
    const m = demand.get(t)?.contentMissBytes;
    if (m !== undefined) sum = (sum ?? 0) + m;
  }
  return sum;
}

export class FillController {
  readonly registry: Registry;
  private windowKey: number | undefined;
  private spent = 0;
  private readonly m: {
    cycles: Counter<'window'>;
    bytes: Counter;
    jobs: Counter<'outcome' | 'source'>;
    windowOpen: Gauge;
    budgetLeft: Gauge;
    planned: Gauge;
  };

  constructor(private readonly o: FillControllerOptions) {
    this.registry = createRegistry({ defaultMetrics: false });
    const registers = [this.registry];
    this.m = {
      cycles: new Counter({ name: 'ocdn_fill_cycles_total', help: 'Fill cycles run, by whether the window was open', labelNames: ['window'], registers }),
      bytes: new Counter({ name: 'ocdn_fill_bytes_total', help: 'Bytes the edges reported pulling for the fills', registers }),
      jobs: new Counter({
        name: 'ocdn_fill_jobs_total',
        help: 'Fill jobs by outcome (done, left, deferred) and source kind',
        labelNames: ['outcome', 'source'],
        registers,
      }),
      windowOpen: new Gauge({ name: 'ocdn_fill_window_open', help: '1 while inside the fill window', registers }),
      budgetLeft: new Gauge({ name: 'ocdn_fill_budget_remaining_bytes', help: "Bytes this window's budget has left", registers }),
      planned: new Gauge({ name: 'ocdn_fill_planned', help: 'Fills the last plan wanted (edge × title lacking)', registers }),
    };
    this.m.budgetLeft.set(o.budgetBytes);
  }

  /** Observe and plan only: what a cycle would fill now, with nothing moved. */
  async plan(): Promise<{ plan: PlannedFill[]; held: number; noRoom: number; demand: Map<string, TitleDemand>; windowOpen: boolean; budgetLeft: number }> {
    const catalog = await this.o.catalog();
    const demand = await recentDemand(this.o.aggregatorUrl, this.o.recentMs);
    const edges = await observeEdges(
      this.o.steeringUrl,
      catalog.titles.map((t) => t.id),
    );
    const { fills, held, noRoom } = planFills({ catalog, demand, edges, top: this.o.top, copies: this.o.copies });
    const opened = windowOpenedAt(this.o.window, this.now());
    return { plan: fills, held, noRoom, demand, windowOpen: opened !== undefined, budgetLeft: this.budgetLeft(opened) };
  }

  /** One cycle: outside the window nothing moves; inside it, what the budget admits is filled (a 429 waits its turn). */
  async cycle(): Promise<CycleReport> {
    const at = this.now();
    const opened = windowOpenedAt(this.o.window, at);
    if (opened !== this.windowKey) {
      this.windowKey = opened;
      this.spent = 0;
    }
    const { plan, held, noRoom, demand } = await this.plan();
    const open = opened !== undefined;
    this.m.windowOpen.set(open ? 1 : 0);
    this.m.planned.set(plan.length);
    this.m.cycles.inc({ window: open ? 'open' : 'closed' });
    const { admitted, deferred } = open ? withinBudget(plan, this.o.budgetBytes - this.spent) : { admitted: [], deferred: plan };
    const report: CycleReport = {
      at: at.toISOString(),
      windowOpen: open,
      plan,
      held,
      noRoom,
      admitted,
      deferred,
      done: [],
      left: [],
      bytesFilled: 0,
      budgetLeft: this.budgetLeft(opened),
      contentMissBytesBefore: contentMissOf(
        demand,
        admitted.map((f) => f.title),
      ),
    };
    if (admitted.length > 0) {
      // The estimate is charged up front, so parallel edges cannot overrun the budget together; what they really pulled replaces it after.
      const estimate = admitted.reduce((s, f) => s + f.bytes, 0);
      this.spent += estimate;
      const byJob = new Map<FillJob, PlannedFill>();
      const jobs = admitted.map((f) => {
        const job: FillJob = { title: f.title, why: f.why, edgeId: f.edgeId, edgeUrl: f.edgeUrl, source: wireSource(f.source) };
        byJob.set(job, f);
        return job;
      });
      const result = await runFillPlan(jobs, {
        adminToken: this.o.adminToken,
        bytesPerSecond: this.o.bytesPerSecond,
        wait: true,
        deadlineMs: this.o.deadlineMs,
        onRetry: this.o.onRetry,
      });
      report.done = result.done;
      report.left = result.left;
      report.bytesFilled = result.done.reduce((s, d) => s + (d.bytesFetched ?? 0), 0);
      this.spent += report.bytesFilled - estimate;
      this.m.bytes.inc(report.bytesFilled);
      for (const d of result.done) this.m.jobs.inc({ outcome: 'done', source: byJob.get(d)?.source.kind ?? 'unknown' });
      for (const l of result.left) this.m.jobs.inc({ outcome: 'left', source: byJob.get(l)?.source.kind ?? 'unknown' });
    }
    for (const f of deferred) this.m.jobs.inc({ outcome: 'deferred', source: f.source.kind });
    report.budgetLeft = this.budgetLeft(opened);
    this.m.budgetLeft.set(report.budgetLeft);
    this.o.log?.info(
      {
        windowOpen: open,
        planned: plan.length,
        held,
        admitted: admitted.length,
        deferred: deferred.length,
        done: report.done.length,
        left: report.left.length,
        bytes: report.bytesFilled,
        budgetLeft: report.budgetLeft,
        contentMissBytesBefore: report.contentMissBytesBefore,
      },
      'fill cycle',
    );
    return report;
  }

  private budgetLeft(opened: number | undefined): number {
    return opened === undefined || opened !== this.windowKey ? this.o.budgetBytes : Math.max(0, this.o.budgetBytes - this.spent);
  }

  private now(): Date {
    return this.o.now?.() ?? new Date();
  }
}

/** Rows of the printed plan: edge, title, copies, source, bytes (and why, and whether the budget admits it). */
export function planRows(plan: readonly PlannedFill[], admitted?: ReadonlySet<PlannedFill>): (string | number)[][] {
  return plan.map((f) => [
    f.edgeId,
    f.title,
    `${f.copy + 1}/${f.copies}`,
    describeSource(f.source),
    f.bytes,
    f.why,
    admitted ? (admitted.has(f) ? 'yes' : 'over budget') : '-',
  ]);
}

export const PLAN_HEADERS = ['edge', 'title', 'copy', 'source', 'bytes', 'why', 'in budget'];

/** The plan as JSON: one contract for --json and the long-running controller's logs. */
export function planJson(plan: readonly PlannedFill[]) {
  return plan.map((f) => ({
    edge: f.edgeId,
    title: f.title,
    tier: f.tier,
    copy: f.copy + 1,
    copies: f.copies,
    source: f.source.kind,
    ...(f.source.kind === 'peer' ? { peer: f.source.edgeId } : {}),
    bytes: f.bytes,
    why: f.why,
  }));
}

/**
 * Long-running mode: a cycle every `everyMs`, /healthz and Prometheus /metrics on `port`; close()
 * (SIGTERM through common/shutdown.ts) lets the running cycle's current jobs end and stops.
 */
export async function serveFillController(
  controller: FillController,
  opts: { everyMs: number; port: number; host?: string; log?: Logger },
): Promise<{ url: string; port: number; close(): Promise<void>; cycles(): number }> {
  let cycles = 0;
  let last: { at: string; ok: boolean; error?: string } | undefined;
  let stopping = false;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();
  const { server }: { server: Server } = createHardenedServer(
    (req, res) => {
      const path = (req.url ?? '/').split('?')[0];
      if (path === '/healthz') return void sendJson(res, stopping ? 503 : 200, { ok: !stopping, cycles, last });
      if (path === '/metrics') return void sendMetrics(res, controller.registry);
      sendJson(res, 404, { error: { code: 'E_NOT_FOUND', message: 'there are /healthz and /metrics' } });
    },
    { log: opts.log, registry: controller.registry },
  );
  const port = await listen(server, opts.port, opts.host ?? '127.0.0.1');
  const tick = () => {
    running = controller
      .cycle()
      .then(() => {
        last = { at: new Date().toISOString(), ok: true };
      })
      .catch((err: unknown) => {
        last = { at: new Date().toISOString(), ok: false, error: describeError(err) };
        opts.log?.warn({ err: describeError(err) }, 'fill cycle failed');
      })
      .finally(() => {
        cycles++;
        if (!stopping) timer = setTimeout(tick, opts.everyMs);
      });
  };
  tick();
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    cycles: () => cycles,
    async close() {
      stopping = true;
      if (timer) clearTimeout(timer);
      await running;
      await closeServer(server);
    },
  };
}

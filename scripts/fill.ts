import { errorMessage } from '../common/http.ts';
import type { Catalog, SteerResponse, FillJob as EdgeFillJob, FillSource } from '../common/contracts.ts';
import { describeError, ErrorCodes, OcdnError } from '../common/errors.ts';
import { retry, retryAfterMs } from '../common/retry.ts';

/** One job of a fill plan: a title into one edge. */
export interface FillJob {
  title: string;
  /** Why the title is in the fill: its recent demand, or its catalog rank. */
  why: string;
  edgeId: string;
  edgeUrl: string;
  /** Where the edge takes the bytes from (default: its own upstream). */
  source?: FillSource;
}

/** A job the edge took (202 started, or 200 finished with `wait`). */
export interface FillDone extends FillJob {
  status: number;
  detail: string;
  attempts: number;
  /** With `wait`: what the edge pulled for it, and how many keys its peer lacked. */
  bytesFetched?: number;
  fromUpstream?: number;
}

/** A job that did not run: refused, or still refused (busy, unreachable) when the deadline passed. */
export interface FillLeft extends FillJob {
  /** The edge's last answer; undefined when it could not be reached. */
  status: number | undefined;
  reason: string;
  attempts: number;
}

export interface FillResult {
  done: FillDone[];
  left: FillLeft[];
}

export const DEFAULT_FILL_DEADLINE_MS = 10 * 60_000;

/** Recent demand of a title, from the aggregator's `/v1/qoe?by=title` totals. */
export interface TitleDemand {
  sessions: number;
  segments: number;
  /** Bytes players asked for that their site's first edge did not hold (present once the aggregator classifies misses). */
  contentMissBytes?: number;
}

/**
 * The titles to fill, most wanted first: titles players asked for recently (by sessions, then
 * segments) lead, since that is what the edges will be asked for next; the catalog's popularity
 * rank orders the rest and breaks ties, so a cluster with no traffic yet fills by the catalog.
 */
export function rankForFill(catalog: Catalog, demand: ReadonlyMap<string, TitleDemand>, top: number): { id: string; why: string }[] {
  const d = (id: string) => demand.get(id) ?? { sessions: 0, segments: 0 };
  return [...catalog.titles]
    .sort((a, b) => d(b.id).sessions - d(a.id).sessions || d(b.id).segments - d(a.id).segments || a.popularityRank - b.popularityRank)
    .slice(0, top)
    .map((t) => {
      const x = d(t.id);
      return { id: t.id, why: x.sessions + x.segments > 0 ? `recent: ${x.sessions} sessions, ${x.segments} segments` : `catalog rank ${t.popularityRank}` };
    });
}

/** Per-title demand over the last `lastMs`; empty (catalog order) when the aggregator is not there. */
export async function recentDemand(aggregatorUrl: string | undefined, lastMs = 15 * 60_000): Promise<Map<string, TitleDemand>> {
  const out = new Map<string, TitleDemand>();
  if (!aggregatorUrl) return out;
  try {
    const res = await fetch(`${aggregatorUrl.replace(/\/+$/, '')}/v1/qoe?by=title&last=${Math.round(lastMs / 1000)}s`, { signal: AbortSignal.timeout(3_000) });
    if (!res.ok) return out;
    for (const r of ((await res.json()) as { totals?: ({ value: string } & TitleDemand)[] }).totals ?? []) {
      const d: TitleDemand = { sessions: r.sessions ?? 0, segments: r.segments ?? 0 };
      if (typeof r.contentMissBytes === 'number' && Number.isFinite(r.contentMissBytes)) d.contentMissBytes = r.contentMissBytes;
      out.set(r.value, d);
    }
  } catch {
    /* no aggregator: the catalog alone decides */
  }
  return out;
}

/** One line for a fill answer: the job's progress, or the edge's reason for refusing. */
function describeJob(text: string): string {
  try {
    const j = JSON.parse(text) as Partial<EdgeFillJob>;
    if (j.id && j.state) {
      const mb = ((j.bytesFetched ?? 0) / 1e6).toFixed(1);
      return j.state === 'running'
        ? `job ${j.id.slice(0, 8)} running`
        : `${j.state}: ${j.done ?? 0}/${j.keys ?? 0} keys, ${mb} MB fetched, ${j.alreadyCached ?? 0} already cached, ${j.failed ?? 0} failed`;
    }
  } catch {
    /* not JSON: errorMessage shows it as it is */
  }
  return errorMessage(text).slice(0, 200);
}

function jobFigures(text: string): { bytesFetched?: number; fromUpstream?: number } {
  try {
    const j = JSON.parse(text) as Partial<EdgeFillJob>;
    return {
      ...(typeof j.bytesFetched === 'number' ? { bytesFetched: j.bytesFetched } : {}),
      ...(typeof j.fromUpstream === 'number' ? { fromUpstream: j.fromUpstream } : {}),
    };
  } catch {
    return {};
  }
}

/** The edge said no; `busy` ones (429, 5xx) may say yes later. */
class FillRefused extends Error {
  constructor(
    readonly status: number,
    readonly detail: string,
    readonly retryAfterMs: number | undefined,
  ) {
    super(`edge answered ${status}: ${detail}`);
  }
  get busy(): boolean {
    return this.status === 429 || this.status >= 500;
  }
}

/** Busy edges and unreachable ones (restarting) are tried again; a 4xx is final. */
const retryable = (err: unknown) => !(err instanceof FillRefused) || err.busy;

/** Each edge takes its jobs in plan order, one at a time (its 429 would turn away the next one too); edges run side by side. */
export async function runFillPlan(
  jobs: readonly FillJob[],
  opts: {
    adminToken: string;
    bytesPerSecond: number;
    /** Wait for each fill to finish (200) instead of returning once it started (202). */
    wait?: boolean;
    /** The whole plan gives up retrying at this point (default 10 min). */
    deadlineMs?: number;
    /** Told each time a job is put back to wait (CLI progress). */
    onRetry?: (job: FillJob, err: unknown, delayMs: number) => void;
  },
): Promise<FillResult> {
  const endAt = Date.now() + (opts.deadlineMs ?? DEFAULT_FILL_DEADLINE_MS);
  const byEdge = new Map<string, FillJob[]>();
  for (const j of jobs) byEdge.set(j.edgeUrl, [...(byEdge.get(j.edgeUrl) ?? []), j]);
  const done = new Map<FillJob, FillDone>();
  const left = new Map<FillJob, FillLeft>();
  const runJob = async (job: FillJob): Promise<void> => {
    let attempts = 0;
    const remaining = endAt - Date.now();
    if (remaining <= 0) {
      left.set(job, { ...job, status: undefined, reason: 'not tried: the deadline had passed', attempts });
      return;
    }
    try {
      const { status, text } = await retry(
        async ({ signal, remainingMs }) => {
          attempts++;
          const res = await fetch(`${job.edgeUrl}/admin/fill`, {
            method: 'POST',
            headers: { authorization: `Bearer ${opts.adminToken}`, 'content-type': 'application/json' },
            body: JSON.stringify({
              title: job.title,
              bytesPerSecond: opts.bytesPerSecond,
              wait: opts.wait ?? false,
              ...(job.source ? { source: job.source } : {}),
            }),
            signal: AbortSignal.any([signal, AbortSignal.timeout(Math.min(remainingMs, opts.wait ? 600_000 : 10_000))]),
          });
          const text = (await res.text()).slice(0, 64 * 1024);
          if (res.status >= 300) throw new FillRefused(res.status, describeJob(text), retryAfterMs(res.headers.get('retry-after')));
          return { status: res.status, text };
        },
        {
          deadlineMs: remaining,
          baseMs: 500,
          maxMs: 30_000,
          retryable,
          retryAfterMs: (err) => (err instanceof FillRefused ? err.retryAfterMs : undefined),
          onRetry: ({ err, delayMs }) => opts.onRetry?.(job, err, delayMs),
        },
      );
      const detail = describeJob(text);
      // With `wait`, a job that ran and failed (or was cancelled by a shutdown) filled nothing.
      if (/^(failed|cancelled)\b/.test(detail)) left.set(job, { ...job, status, reason: detail, attempts });
      else done.set(job, { ...job, status, detail, attempts, ...jobFigures(text) });
    } catch (err) {
      const status = err instanceof FillRefused ? err.status : undefined;
      const why = err instanceof FillRefused ? err.message : `edge unreachable: ${describeError((err as Error).cause ?? err)}`;
      const reason = retryable(err) ? `${why} (still so at the deadline, after ${attempts} attempt${attempts === 1 ? '' : 's'})` : why;
      left.set(job, { ...job, status, reason, attempts });
    }
  };
  await Promise.all(
    [...byEdge.values()].map(async (list) => {
      for (const job of list) await runJob(job);
    }),
  );
  // Plan order (most wanted first), whatever order the edges finished in.
  return { done: jobs.flatMap((j) => done.get(j) ?? []), left: jobs.flatMap((j) => left.get(j) ?? []) };
}

/**
 * The jobs of a proactive fill, as Open Connect does off-peak: for the `top` most wanted titles,
 * ask steering where each would be sent (one first-choice edge per region).
 */
export async function planFill(opts: {
  catalog: Catalog;
  top: number;
  steeringUrl: string;
  regions: string[];
  edges: { id: string; url: string }[];
  demand?: ReadonlyMap<string, TitleDemand>;
}): Promise<FillJob[]> {
  const titles = rankForFill(opts.catalog, opts.demand ?? new Map(), opts.top);
  const byId = new Map(opts.edges.map((e) => [e.id, e.url]));
  const plan = new Map<string, FillJob>();
  for (const t of titles) {
    for (const region of opts.regions) {
      const res = await fetch(`${opts.steeringUrl}/v1/steer?title=${encodeURIComponent(t.id)}&region=${encodeURIComponent(region)}`, {
        signal: AbortSignal.timeout(5_000),
      });
      if (!res.ok) throw new OcdnError(ErrorCodes.NO_EDGE, `steering answered ${res.status} for ${t.id} in ${region}: ${(await res.text()).trim()}`);
      const steer = (await res.json()) as SteerResponse;
      const first = steer.edges[0];
      const edgeUrl = first ? byId.get(first.id) : undefined;
      if (first && edgeUrl) plan.set(`${t.id}|${first.id}`, { title: t.id, why: t.why, edgeId: first.id, edgeUrl });
    }
  }
  return [...plan.values()];
}

/**
 * Proactive fill: plan with steering, then tell those edges to prefetch each title at a bounded
 * byte rate so the fill never starves live traffic. An edge at its limit of running fills
 * answers 429 with Retry-After; such jobs wait their turn until the deadline.
 */
export async function proactiveFill(
  opts: Parameters<typeof planFill>[0] & {
    bytesPerSecond: number;
    adminToken: string;
    wait?: boolean;
    deadlineMs?: number;
    onRetry?: (job: FillJob, err: unknown, delayMs: number) => void;
  },
): Promise<FillResult> {
  return runFillPlan(await planFill(opts), opts);
}

import type { Catalog, SteerResponse } from '../common/contracts.ts';
import { ErrorCodes, OcdnError } from '../common/errors.ts';

export interface FillPlanEntry {
  title: string;
  /** Why the title is in the fill: its recent demand, or its catalog rank. */
  why: string;
  edgeId: string;
  edgeUrl: string;
  status: number;
  detail: string;
}

/** Recent demand of a title, from the aggregator's `/v1/qoe?by=title` totals. */
export interface TitleDemand {
  sessions: number;
  segments: number;
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
    for (const r of ((await res.json()) as { totals?: ({ value: string } & TitleDemand)[] }).totals ?? [])
      out.set(r.value, { sessions: r.sessions ?? 0, segments: r.segments ?? 0 });
  } catch {
    /* no aggregator: the catalog alone decides */
  }
  return out;
}

/**
 * Proactive fill, as Open Connect does off-peak: for the `top` most popular titles, ask steering
 * where each would be sent (one first-choice edge per region), and tell those edges to prefetch
 * the title at a bounded byte rate so the fill never starves live traffic.
 */
/** One line for a fill answer: the job's progress, or the edge's reason for refusing. */
function describeJob(text: string): string {
  try {
    const j = JSON.parse(text) as {
      id?: string;
      state?: string;
      keys?: number;
      done?: number;
      bytesFetched?: number;
      alreadyCached?: number;
      failed?: number;
      reason?: string;
    };
    if (j.id && j.state) {
      const mb = ((j.bytesFetched ?? 0) / 1e6).toFixed(1);
      return j.state === 'running'
        ? `job ${j.id.slice(0, 8)} running`
        : `${j.state}: ${j.done ?? 0}/${j.keys ?? 0} keys, ${mb} MB fetched, ${j.alreadyCached ?? 0} already cached, ${j.failed ?? 0} failed`;
    }
    if (j.reason) return j.reason.slice(0, 200);
  } catch {
    /* not JSON: show it as it is */
  }
  return text.trim().slice(0, 200);
}

export async function proactiveFill(opts: {
  catalog: Catalog;
  top: number;
  bytesPerSecond: number;
  steeringUrl: string;
  regions: string[];
  edges: { id: string; url: string }[];
  adminToken: string;
  /** Wait for each fill to finish (200) instead of returning once it started (202). */
  wait?: boolean;
  /** Recent per-title demand (recentDemand()); titles rank by catalog alone without it. */
  demand?: ReadonlyMap<string, TitleDemand>;
}): Promise<FillPlanEntry[]> {
  const titles = rankForFill(opts.catalog, opts.demand ?? new Map(), opts.top);
  const byId = new Map(opts.edges.map((e) => [e.id, e.url]));
  const plan = new Map<string, { title: string; why: string; edgeId: string }>();
  for (const t of titles) {
    for (const region of opts.regions) {
      const res = await fetch(`${opts.steeringUrl}/v1/steer?title=${encodeURIComponent(t.id)}&region=${encodeURIComponent(region)}`, {
        signal: AbortSignal.timeout(5_000),
      });
      if (!res.ok) throw new OcdnError(ErrorCodes.NO_EDGE, `steering answered ${res.status} for ${t.id} in ${region}: ${(await res.text()).trim()}`);
      const steer = (await res.json()) as SteerResponse;
      const first = steer.edges[0];
      if (first) plan.set(`${t.id}|${first.id}`, { title: t.id, why: t.why, edgeId: first.id });
    }
  }
  const out: FillPlanEntry[] = [];
  for (const { title, why, edgeId } of plan.values()) {
    const edgeUrl = byId.get(edgeId);
    if (!edgeUrl) continue;
    const res = await fetch(`${edgeUrl}/admin/fill`, {
      method: 'POST',
      headers: { authorization: `Bearer ${opts.adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ title, bytesPerSecond: opts.bytesPerSecond, wait: opts.wait ?? false }),
      signal: AbortSignal.timeout(opts.wait ? 600_000 : 10_000),
    });
    out.push({ title, why, edgeId, edgeUrl, status: res.status, detail: describeJob(await res.text()) });
  }
  return out;
}

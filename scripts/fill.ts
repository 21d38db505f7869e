import type { Catalog, SteerResponse } from '../common/contracts.ts';
import { ErrorCodes, OcdnError } from '../common/errors.ts';

export interface FillPlanEntry {
  title: string;
  edgeId: string;
  edgeUrl: string;
  status: number;
  detail: string;
}

/**
 * Proactive fill, as Open Connect does off-peak: for the `top` most popular titles, ask steering
 * where each would be sent (one first-choice edge per region), and tell those edges to prefetch
 * the title at a bounded byte rate so the fill never starves live traffic.
 */
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
}): Promise<FillPlanEntry[]> {
  const titles = [...opts.catalog.titles].sort((a, b) => a.popularityRank - b.popularityRank).slice(0, opts.top);
  const byId = new Map(opts.edges.map((e) => [e.id, e.url]));
  const plan = new Map<string, { title: string; edgeId: string }>();
  for (const t of titles) {
    for (const region of opts.regions) {
      const res = await fetch(`${opts.steeringUrl}/v1/steer?title=${encodeURIComponent(t.id)}&region=${encodeURIComponent(region)}`, { signal: AbortSignal.timeout(5_000) });
      if (!res.ok) throw new OcdnError(ErrorCodes.NO_EDGE, `steering answered ${res.status} for ${t.id} in ${region}: ${(await res.text()).trim()}`);
      const steer = (await res.json()) as SteerResponse;
      const first = steer.edges[0];
      if (first) plan.set(`${t.id}|${first.id}`, { title: t.id, edgeId: first.id });
    }
  }
  const out: FillPlanEntry[] = [];
  for (const { title, edgeId } of plan.values()) {
    const edgeUrl = byId.get(edgeId);
    if (!edgeUrl) continue;
    const res = await fetch(`${edgeUrl}/admin/fill`, {
      method: 'POST',
      headers: { authorization: `Bearer ${opts.adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ title, bytesPerSecond: opts.bytesPerSecond, wait: opts.wait ?? false }),
      signal: AbortSignal.timeout(opts.wait ? 600_000 : 10_000),
    });
    out.push({ title, edgeId, edgeUrl, status: res.status, detail: (await res.text()).trim().slice(0, 200) });
  }
  return out;
}

import type { Catalog, CatalogTitle, FillSource } from '../common/contracts.ts';
import { ErrorCodes, OcdnError } from '../common/errors.ts';
import { hashPolicy, type EdgeView } from '../steering/policies.ts';
import type { TitleDemand } from './fill.ts';

/**
 * The fill controller's pure half: which titles each edge should hold (its manifest), what it
 * lacks against its inventory (the diff), where each fill comes from, and what a window and a
 * byte budget let through. No I/O, so every decision is unit-testable.
 */

/** An edge as the controller sees it: steering's row plus which of the wanted titles it holds. */
export interface FillEdge {
  id: string;
  url: string;
  /** The site (steering's region). */
  region: string;
  healthy: boolean;
  /** What it can hold, RAM and disk (heartbeats); undefined = no bound known. */
  capacityBytes?: number;
  /** Its shield, when its misses go to one instead of S3. */
  parent?: string;
  holds: ReadonlySet<string>;
}

/** One line of an edge's manifest: a title it should hold, and why. */
export interface ManifestEntry {
  edgeId: string;
  title: string;
  /** Popularity tier (0 = most wanted) and the copies per site it gets. */
  tier: number;
  copies: number;
  /** This edge's place among the title's copies in its site (0 = where steering sends first). */
  copy: number;
  why: string;
  /** Estimated bytes of the whole title. */
  bytes: number;
}

/** Where a fill's bytes come from, as the plan prints it. */
export type PlannedSource = { kind: 'peer'; edgeId: string; url: string } | { kind: 'shield'; url: string } | { kind: 's3' };

export interface PlannedFill extends ManifestEntry {
  edgeUrl: string;
  source: PlannedSource;
}

export interface FillPlanResult {
  /** Every edge's manifest, held or not. */
  manifest: ManifestEntry[];
  /** What is missing, in priority order: the fills to run. */
  fills: PlannedFill[];
  /** Manifest lines already held. */
  held: number;
  /** Copies no edge of the site had room for (its manifest would pass FILL_SHARE of its capacity). */
  noRoom: number;
}

/**
 * Share of an edge's capacity its manifest may take: the rest stays for what players ask beyond
 * it, and a fill never evicts the titles filled just before it.
 */
export const FILL_SHARE = 0.8;

/** `3,2,1`: copies per site for tier 0, 1, 2. */
export function parseCopies(s: string): number[] {
  const parts = s.split(',').map((p) => Number(p.trim()));
  if (parts.length === 0 || parts.some((n) => !Number.isInteger(n) || n < 1 || n > 64))
    throw new OcdnError(ErrorCodes.USAGE, `--copies must be a comma-separated list of whole numbers 1-64, e.g. 3,2,1 (got "${s}")`);
  return parts;
}

/** Estimated bytes of a title: every rendition at its peak bandwidth for the whole duration (an upper bound, so budgets hold). */
export function titleBytes(t: CatalogTitle): number {
  if (t.manifest) return t.manifest.bytes;
  return Math.ceil(t.renditions.reduce((sum, r) => sum + (r.bandwidth * t.durationSec) / 8, 0));
}

/**
 * The titles to hold, most wanted first: recent sessions, then content-miss bytes (what players
 * asked a site for that it lacked), then segments, then catalog rank.
 */
export function rankTitles(catalog: Catalog, demand: ReadonlyMap<string, TitleDemand>, top: number): { title: CatalogTitle; why: string }[] {
  const zero: TitleDemand = { sessions: 0, segments: 0 };
  const d = (id: string) => demand.get(id) ?? zero;
  return [...catalog.titles]
    .sort(
      (a, b) =>
        d(b.id).sessions - d(a.id).sessions ||
        (d(b.id).contentMissBytes ?? 0) - (d(a.id).contentMissBytes ?? 0) ||
        d(b.id).segments - d(a.id).segments ||
        a.popularityRank - b.popularityRank,
    )
    .slice(0, top)
    .map((title) => {
      const x = d(title.id);
      const miss = x.contentMissBytes ? `, ${x.contentMissBytes} content-miss bytes` : '';
      const why = x.sessions + x.segments + (x.contentMissBytes ?? 0) > 0 ? `recent: ${x.sessions} sessions${miss}` : `catalog rank ${title.popularityRank}`;
      return { title, why };
    });
}

/** A title's edges of one site in the order steering's rendezvous hashing puts them (equal loads). */
export function placeInSite(title: string, siteEdges: readonly FillEdge[]): FillEdge[] {
  const views: EdgeView[] = siteEdges.map((e) => ({ id: e.id, url: e.url, region: e.region, load: 0, titles: e.holds }));
  const byId = new Map(siteEdges.map((e) => [e.id, e]));
  return hashPolicy.rank({ title, edges: views, siteOrder: [], epsilon: 0, random: () => 0, seq: 0 }).map((r) => byId.get(r.edge.id)!);
}

/**
 * Tier of the i-th title: the top is cut into as many equal slices as `copies` has entries, so
 * `--top 30 --copies 3,2,1` gives the first 10 titles 3 copies per site, the next 10 two, the rest one.
 */
export function tierOf(index: number, top: number, tiers: number): number {
  return Math.min(tiers - 1, Math.floor(index / Math.max(1, Math.ceil(top / tiers))));
}

/**
 * Each site's healthy edges get the title's copies on the first `copies` edges of steering's
 * order; an edge that lacks its copy fills from a peer of the site that holds the title, else
 * from its shield, else from S3.
 */
export function planFills(opts: {
  catalog: Catalog;
  demand: ReadonlyMap<string, TitleDemand>;
  edges: readonly FillEdge[];
  top: number;
  copies: readonly number[];
}): FillPlanResult {
  const titles = rankTitles(opts.catalog, opts.demand, opts.top);
  const sites = new Map<string, FillEdge[]>();
  for (const e of opts.edges) if (e.healthy) sites.set(e.region, [...(sites.get(e.region) ?? []), e]);
  const manifest: ManifestEntry[] = [];
  const fills: PlannedFill[] = [];
  let held = 0;
  let noRoom = 0;
  const planned = new Map<string, number>();
  const hasRoom = (e: FillEdge, bytes: number) => e.capacityBytes === undefined || (planned.get(e.id) ?? 0) + bytes <= e.capacityBytes * FILL_SHARE;
  titles.forEach(({ title, why }, i) => {
    const tier = tierOf(i, opts.top, opts.copies.length);
    const copies = opts.copies[tier]!;
    const bytes = titleBytes(title);
    for (const siteEdges of [...sites.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([, v]) => v)) {
      const ranked = placeInSite(title.id, siteEdges);
      const holders = ranked.filter((e) => e.holds.has(title.id));
      // Steering's order, skipping edges whose manifest is full: the copy goes to the next one.
      const chosen = ranked.filter((e) => hasRoom(e, bytes)).slice(0, copies);
      noRoom += Math.min(copies, ranked.length) - chosen.length;
      chosen.forEach((edge, copy) => {
        planned.set(edge.id, (planned.get(edge.id) ?? 0) + bytes);
        const entry: ManifestEntry = { edgeId: edge.id, title: title.id, tier, copies, copy, why, bytes };
        manifest.push(entry);
        if (edge.holds.has(title.id)) {
          held++;
          return;
        }
        const peer = holders.find((h) => h.id !== edge.id);
        const source: PlannedSource = peer
          ? { kind: 'peer', edgeId: peer.id, url: peer.url }
          : edge.parent
            ? { kind: 'shield', url: edge.parent }
            : { kind: 's3' };
        fills.push({ ...entry, edgeUrl: edge.url, source });
      });
    }
  });
  // Tier by tier, first copies before second ones, most wanted first: a budget cut leaves every site one copy of the top first.
  return {
    manifest,
    fills: stableByTitleRank(
      fills,
      titles.map((t) => t.title.id),
    ),
    held,
    noRoom,
  };
}

function stableByTitleRank(fills: PlannedFill[], order: string[]): PlannedFill[] {
  const rank = new Map(order.map((t, i) => [t, i]));
  return fills
    .map((f, i) => ({ f, i }))
    .sort((a, b) => a.f.tier - b.f.tier || a.f.copy - b.f.copy || rank.get(a.f.title)! - rank.get(b.f.title)! || a.i - b.i)
    .map(({ f }) => f);
}

/** The wire form of a planned source: a peer is asked for by URL; shield and S3 are the edge's own upstream. */
export function wireSource(s: PlannedSource): FillSource {
  return s.kind === 'peer' ? { kind: 'peer', url: s.url } : { kind: 'upstream' };
}

export function describeSource(s: PlannedSource): string {
  return s.kind === 'peer' ? `peer ${s.edgeId}` : s.kind === 'shield' ? `shield ${s.url}` : 's3';
}

/** Splits fills into those the budget's `remaining` bytes admit, in order, and those left for a later window. */
export function withinBudget<T extends { bytes: number }>(fills: readonly T[], remaining: number): { admitted: T[]; deferred: T[] } {
  const admitted: T[] = [];
  const deferred: T[] = [];
  let left = remaining;
  for (const f of fills) {
    if (f.bytes <= left) {
      admitted.push(f);
      left -= f.bytes;
    } else deferred.push(f);
  }
  return { admitted, deferred };
}

// ---- the fill window ----------------------------------------------------------------------

/** `always`, or a daily span of local time `HH:MM-HH:MM` (may wrap past midnight). */
export type FillWindow = { always: true } | { always: false; startMin: number; endMin: number; text: string };

export function parseWindow(s: string): FillWindow {
  if (s.trim() === 'always') return { always: true };
  const m = /^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$/.exec(s.trim());
  const mins = m ? [Number(m[1]) * 60 + Number(m[2]), Number(m[3]) * 60 + Number(m[4])] : [];
  if (!m || Number(m[2]) > 59 || Number(m[4]) > 59 || mins.some((x) => x > 24 * 60) || mins[0] === mins[1])
    throw new OcdnError(ErrorCodes.USAGE, `--window must be "always" or local times HH:MM-HH:MM, e.g. 02:00-14:00 (got "${s}")`);
  return { always: false, startMin: mins[0]!, endMin: mins[1]!, text: s.trim() };
}

/**
 * When the window instance containing `now` opened (ms since epoch), or undefined outside it.
 * The instance identifies the window's budget: it starts afresh when a new window opens.
 */
export function windowOpenedAt(w: FillWindow, now: Date): number | undefined {
  if (w.always) return 0;
  const minute = now.getHours() * 60 + now.getMinutes();
  const at = (dayOffset: number) => new Date(now.getFullYear(), now.getMonth(), now.getDate() + dayOffset, 0, w.startMin).getTime();
  if (w.startMin < w.endMin) return minute >= w.startMin && minute < w.endMin ? at(0) : undefined;
  // Wraps midnight: open from start to 24:00, and from 00:00 to end (opened yesterday).
  if (minute >= w.startMin) return at(0);
  if (minute < w.endMin) return at(-1);
  return undefined;
}

export function describeWindow(w: FillWindow): string {
  return w.always ? 'always' : w.text;
}

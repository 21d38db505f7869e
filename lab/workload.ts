import type { CatalogTitle } from '../common/contracts.ts';
import { Zipf } from '../common/zipf.ts';
import { syntheticTitle, titleId } from '../origin/catalog.ts';
import { getLadder } from '../origin/ladder.ts';
import { segmentSizes } from '../origin/synthetic.ts';
import { exponential, geometric, rngFor } from '../player-sim/rng.ts';

/**
 * The player workload of a lab run: who arrives when, watching what for how long, from which
 * site. It is drawn once from the seed and replayed unchanged through every combination, so
 * policies are compared on the same viewers.
 */
export interface WorkloadOptions {
  titles: number;
  sessions: number;
  seed: number;
  /** Zipf exponent of title popularity (0.9: between the 0.8 and 1.0 VoD traces usually fit). */
  zipfAlpha: number;
  edges: number;
  /** Edges are spread round-robin over this many sites; sessions likewise. */
  sites: number;
  /** Title length and segment length, seconds; all titles share them. */
  durationSec: number;
  segmentSec: number;
  ladder: string;
  /** Mean watch time, seconds (geometric drop-off, as `ocdn play --watch`). */
  watchMeanS: number;
  /** Sessions arrive as a Poisson process over this much virtual time, ms. */
  arrivalMs: number;
}

export const WORKLOAD_DEFAULTS: Omit<WorkloadOptions, 'seed'> = {
  titles: 200,
  sessions: 600,
  zipfAlpha: 0.9,
  edges: 4,
  sites: 2,
  durationSec: 120,
  segmentSec: 6,
  ladder: 'small',
  watchMeanS: 60,
  arrivalMs: 600_000,
};

export interface LabEdge {
  id: string;
  region: string;
}

export interface LabSession {
  index: number;
  atMs: number;
  title: string;
  watchS: number;
  region: string;
  isp: string;
  device: string;
}

export interface Workload {
  options: WorkloadOptions;
  titles: CatalogTitle[];
  edges: LabEdge[];
  sessions: LabSession[];
  /** Sum of every segment of every rendition of every title: what capacities are fractions of. */
  catalogBytes: number;
}

const ISPS = ['isp-a', 'isp-b', 'isp-c'];
const DEVICES = ['tv', 'desktop', 'mobile'];

export function siteName(i: number): string {
  return `site-${i + 1}`;
}

export function buildWorkload(o: WorkloadOptions): Workload {
  const ladder = getLadder(o.ladder);
  const titles: CatalogTitle[] = [];
  for (let n = 1; n <= o.titles; n++) titles.push(syntheticTitle({ id: titleId(n), rank: n, durationSec: o.durationSec, segmentSec: o.segmentSec, ladder }));
  let catalogBytes = 0;
  for (const t of titles)
    for (const r of t.renditions)
      for (const s of segmentSizes({ title: t.id, rendition: r.name, bitrate: r.averageBandwidth, durationSec: t.durationSec, segmentSec: t.segmentSec }))
        catalogBytes += s;

  const sites = Math.max(1, Math.min(o.sites, o.edges));
  const edges = Array.from({ length: o.edges }, (_, i) => ({ id: `edge-${i + 1}`, region: siteName(i % sites) }));

  const zipf = new Zipf(o.titles, o.zipfAlpha);
  const arrivals = rngFor(o.seed, 'lab-arrivals');
  const meanGap = o.arrivalMs / Math.max(1, o.sessions);
  const sessions: LabSession[] = [];
  let at = 0;
  for (let i = 0; i < o.sessions; i++) {
    // Per-session draws hash (seed, index) like player-sim, so session i does not depend on the others.
    const rng = rngFor(o.seed, 'lab-session', i);
    sessions.push({
      index: i,
      atMs: Math.round(at),
      title: titles[zipf.rank(rng()) - 1]!.id,
      watchS: geometric(rng, 1 / Math.max(1, o.watchMeanS)),
      region: siteName(Math.floor(rng() * sites)),
      isp: ISPS[Math.floor(rng() * ISPS.length)]!,
      device: DEVICES[Math.floor(rng() * DEVICES.length)]!,
    });
    at += exponential(arrivals, meanGap);
  }
  return { options: o, titles, edges, sessions, catalogBytes };
}

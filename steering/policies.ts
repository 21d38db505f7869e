/**
 * Ranking policies: pure functions from (title, healthy edges, client site order, knobs) to a
 * ranked list. Randomness and the round-robin counter come in through the input, so every
 * policy is deterministic for a given input and testable without a server.
 */

export const POLICY_NAMES = ['random', 'round-robin', 'least-loaded', 'hash', 'hrw-bounded'] as const;
export type PolicyName = (typeof POLICY_NAMES)[number];
export const DEFAULT_POLICY: PolicyName = 'hrw-bounded';
export const DEFAULT_EPSILON = 0.25;

export function isPolicyName(s: string): s is PolicyName {
  return (POLICY_NAMES as readonly string[]).includes(s);
}

import type { TitleSet } from './inventory.ts';

/** What a policy knows about one healthy edge. */
export interface EdgeView {
  id: string;
  /** Base URL, no trailing slash. */
  url: string;
  region: string;
  /** Any non-negative measure of how busy the edge is; only comparisons between edges matter. */
  load: number;
  /** Titles the edge reports holding (compact inventory: a Set, or steering's Bloom filter). */
  titles: TitleSet;
  /** Set by QoE feedback: rank after every non-demoted edge of the same tier. */
  demoted?: boolean;
}

export interface RankInput {
  title: string;
  /** Healthy edges only, in any order. */
  edges: readonly EdgeView[];
  /** The client's site first, then its fallback sites nearest first (Topology.siteOrder). */
  siteOrder: readonly string[];
  /** hrw-bounded: an edge is overloaded above (1 + epsilon) × the mean load of its tier (+ loadQuantum). */
  epsilon: number;
  /**
   * hrw-bounded: load of one more session. The bound is (1 + ε)·mean + loadQuantum, the
   * continuous form of the ceiling in bounded-load consistent hashing (Mirrokni et al.):
   * without it, at small counts one session on an edge already puts it over (1 + ε)·mean and
   * consecutive sessions of a title alternate between edges. Default 0.
   */
  loadQuantum?: number;
  /** Uniform [0, 1) source for `random`. */
  random: () => number;
  /** Monotonic request counter for `round-robin`. */
  seq: number;
}

export interface RankedEdge {
  edge: EdgeView;
  /** Why the edge is at this place, e.g. "site+hash", "backup-site+inventory", "site+overload-skip". */
  reason: string;
  /**
   * The value the policy ranked by: the rendezvous weight in [0, 1) for hash and hrw-bounded
   * (higher first), the load for least-loaded (lower first), the draw for random, the
   * position from the end for round-robin.
   */
  score: number;
}

export interface Policy {
  readonly name: PolicyName;
  rank(input: RankInput): RankedEdge[];
}

// ---- rendezvous hashing -----------------------------------------------------------------

const FNV_OFFSET = 0x811c9dc5;

function fnv(h: number, s: string): number {
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h;
}

/**
 * FNV state after `${edgeId}\u0000`: the hash of the pair continues from it over the title,
 * which equals hashing the concatenation without building it on every decision.
 */
const edgePrefix = new Map<string, number>();
function prefixOf(edgeId: string): number {
  let h = edgePrefix.get(edgeId);
  if (h === undefined) {
    h = fnv(fnv(FNV_OFFSET, edgeId), '\u0000');
    if (edgePrefix.size > 100_000) edgePrefix.clear();
    edgePrefix.set(edgeId, h);
  }
  return h;
}

/** murmur3's finaliser after FNV-1a, so keys differing in one character still spread fully. */
function finish(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Rendezvous (highest random weight) score of an edge for a title, uniform in [0, 1). */
export function hrwScore(title: string, edgeId: string): number {
  return finish(fnv(prefixOf(edgeId), title)) / 4294967296;
}

function byScoreThenId(a: RankedEdge, b: RankedEdge): number {
  return b.score - a.score || (a.edge.id < b.edge.id ? -1 : a.edge.id > b.edge.id ? 1 : 0);
}

// ---- policies ---------------------------------------------------------------------------

export const randomPolicy: Policy = {
  name: 'random',
  rank({ edges, random }) {
    const out = edges.map((edge) => ({ edge, reason: 'random', score: random() }));
    return out.sort(byScoreThenId);
  },
};

export const roundRobinPolicy: Policy = {
  name: 'round-robin',
  rank({ edges, seq }) {
    const sorted = [...edges].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const n = sorted.length;
    const start = n === 0 ? 0 : ((seq % n) + n) % n;
    return sorted.map((_, i) => ({ edge: sorted[(start + i) % n]!, reason: 'round-robin', score: n - i }));
  },
};

export const leastLoadedPolicy: Policy = {
  name: 'least-loaded',
  rank({ edges, title }) {
    // Equal loads (an idle cluster) fall back to rendezvous order so titles still stick somewhere.
    return edges
      .map((edge) => ({ edge, reason: 'least-loaded', score: edge.load, hrw: hrwScore(title, edge.id) }))
      .sort((a, b) => a.score - b.score || b.hrw - a.hrw)
      .map(({ edge, reason, score }) => ({ edge, reason, score }));
  },
};

export const hashPolicy: Policy = {
  name: 'hash',
  rank({ edges, title }) {
    return edges.map((edge) => ({ edge, reason: 'hash', score: hrwScore(title, edge.id) })).sort(byScoreThenId);
  },
};

/** Reason strings made once: a decision should not build strings it can look up. */
const tierReasons = (tier: string) => ({
  hash: `${tier}+hash`,
  inventory: `${tier}+inventory`,
  overload: `${tier}+overload-skip`,
  demoted: `${tier}+qoe-demoted`,
});
const SITE_REASONS = tierReasons('site');
const BACKUP_REASONS = tierReasons('backup-site');
const OTHER_REASONS = tierReasons('other-site');

/** Site → tier, per site-order array (Topology hands out the same array for a site). */
const tierIndexes = new WeakMap<readonly string[], Map<string, number>>();
function tierIndex(siteOrder: readonly string[]): Map<string, number> {
  let m = tierIndexes.get(siteOrder);
  if (!m) {
    m = new Map();
    for (let i = 0; i < siteOrder.length; i++) if (!m.has(siteOrder[i]!)) m.set(siteOrder[i]!, i);
    tierIndexes.set(siteOrder, m);
  }
  return m;
}

interface TierEntry {
  edge: EdgeView;
  score: number;
  reason: string;
  key: number;
}

/**
 * Client site first, then fallback sites nearest first, then edges of regions the topology
 * does not know. Inside a tier: rendezvous order on the title, except that edges above
 * (1 + ε) × the tier's mean load (+ loadQuantum) go to the back of the tier (bounded-load consistent hashing),
 * QoE-demoted edges go behind the healthy ones, and edges already holding the title rank
 * before equal ones that do not (a hit instead of an origin fetch).
 */
export const hrwBoundedPolicy: Policy = {
  name: 'hrw-bounded',
  rank({ edges, title, siteOrder, epsilon, loadQuantum = 0 }) {
    const tierOf = tierIndex(siteOrder);
    const otherTier = siteOrder.length;
    // Per-tier load sums first: the bound of a tier needs its mean.
    const sums: number[] = [];
    const counts: number[] = [];
    const tierOfEdge: number[] = new Array<number>(edges.length);
    for (let i = 0; i < edges.length; i++) {
      const e = edges[i]!;
      const t = tierOf.get(e.region) ?? otherTier;
      tierOfEdge[i] = t;
      sums[t] = (sums[t] ?? 0) + e.load;
      counts[t] = (counts[t] ?? 0) + 1;
    }
    // One numeric sort key per edge, so the hot path sorts numbers with one comparison:
    // 2 × (8 × tier + class) + (1 − score), where class orders healthy-and-holding (0),
    // healthy (1), demoted (2, 3) and overloaded (4..7) edges; the fraction is rendezvous order.
    const entries: TierEntry[] = new Array<TierEntry>(edges.length);
    for (let i = 0; i < edges.length; i++) {
      const edge = edges[i]!;
      const t = tierOfEdge[i]!;
      const overloaded = edge.load > (1 + epsilon) * (sums[t]! / counts[t]!) + loadQuantum;
      const holds = edge.titles.has(title);
      const score = hrwScore(title, edge.id);
      const cls = (overloaded ? 4 : 0) + (edge.demoted ? 2 : 0) + (holds ? 0 : 1);
      const reasons = t === 0 ? SITE_REASONS : t === otherTier ? OTHER_REASONS : BACKUP_REASONS;
      const reason = overloaded ? reasons.overload : edge.demoted ? reasons.demoted : holds ? reasons.inventory : reasons.hash;
      entries[i] = { edge, score, reason, key: 2 * (8 * t + cls) + (1 - score) };
    }
    entries.sort((a, b) => a.key - b.key || (a.edge.id < b.edge.id ? -1 : 1));
    const out: RankedEdge[] = new Array<RankedEdge>(entries.length);
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i]!;
      out[i] = { edge: e.edge, reason: e.reason, score: e.score };
    }
    return out;
  },
};

export const POLICIES: Readonly<Record<PolicyName, Policy>> = {
  random: randomPolicy,
  'round-robin': roundRobinPolicy,
  'least-loaded': leastLoadedPolicy,
  hash: hashPolicy,
  'hrw-bounded': hrwBoundedPolicy,
};

export function getPolicy(name: PolicyName): Policy {
  return POLICIES[name];
}

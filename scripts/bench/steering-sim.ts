/**
 * Steering policies against byte-bounded LRU edge caches, without sockets: what each policy
 * does to the cluster's cache hit ratio (= origin offload) and to the balance of load.
 *
 *   npm run bench:steering-sim -- [--edges 4,16] [--capacity 256MB,1GB,4GB] [--titles 200] [--zipf 0.9]
 *                                 [--requests 600000] [--concurrency 400] [--session-mean 40]
 *                                 [--policies random,round-robin,least-loaded,hash,hrw-bounded]
 *                                 [--epsilon 0.25] [--seed 1] [--no-inventory] [--json]
 *
 * Workload: titles of `segments` segments of `segment-bytes` each (default 150 × 1.5 MB: 10 min
 * at 3 Mbit/s), chosen by Zipf(s) popularity; a session plays from the start for a geometric
 * number of segments (mean `session-mean`); `concurrency` sessions are active at once and
 * take turns fetching their next segment. `--capacity` is per edge; a list runs each size (the
 * default spans the cluster default of 256 MB to a cluster bigger than the catalog).
 * Each new session is steered once, with the policy seeing every edge's active sessions as its
 * load and the titles it holds as its inventory (all edges in one site, so hrw-bounded is pure
 * bounded-load rendezvous). The hit ratio counts
 * requests after the first `warmup` share of the run (caches warm). Peak/mean load: the busiest
 * edge's bytes served over the mean, over the run; and the busiest edge's active sessions over
 * the mean, averaged over samples taken every 1,000 requests.
 */
import { parseArgs } from 'node:util';
import { LRUCache } from 'lru-cache';
import { parseBytes, formatBytes } from '../../common/units.ts';
import { mulberry32, Zipf } from '../../common/zipf.ts';
import { renderTable } from '../../common/table.ts';
import { getPolicy, isPolicyName, POLICY_NAMES, type EdgeView, type PolicyName } from '../../steering/policies.ts';

const { values } = parseArgs({
  options: {
    edges: { type: 'string', default: '4,16' },
    capacity: { type: 'string', default: '256MB,1GB,4GB' },
    titles: { type: 'string', default: '200' },
    zipf: { type: 'string', default: '0.9' },
    segments: { type: 'string', default: '150' },
    'segment-bytes': { type: 'string', default: '1.5MB' },
    requests: { type: 'string', default: '600000' },
    concurrency: { type: 'string', default: '400' },
    'session-mean': { type: 'string', default: '40' },
    warmup: { type: 'string', default: '0.2' },
    policies: { type: 'string', default: POLICY_NAMES.join(',') },
    epsilon: { type: 'string', default: '0.25' },
    seed: { type: 'string', default: '1' },
    json: { type: 'boolean', default: false },
    /** hrw-bounded without inventory (edges report no titles): shows what content-awareness adds. */
    'no-inventory': { type: 'boolean', default: false },
  },
});

interface SimConfig {
  edges: number;
  capacityBytes: number;
  titles: number;
  zipf: number;
  segments: number;
  segmentBytes: number;
  requests: number;
  concurrency: number;
  sessionMean: number;
  warmup: number;
  epsilon: number;
  seed: number;
  inventory: boolean;
}

export interface SimResult {
  policy: PolicyName;
  edges: number;
  capacityBytes: number;
  hitRatio: number;
  originShare: number;
  peakMeanBytes: number;
  peakMeanActive: number;
  maxPeakMeanActive: number;
  sessions: number;
}

interface SimEdge {
  view: EdgeView & { titles: Set<string> };
  cache: LRUCache<number, number>;
  held: Map<number, number>;
  served: number;
  active: number;
}

interface Session {
  title: number;
  next: number;
  end: number;
  edge: SimEdge;
}

export function simulate(policy: PolicyName, c: SimConfig): SimResult {
  const rand = mulberry32(c.seed);
  const zipf = new Zipf(c.titles, c.zipf);
  const titleName = (t: number) => `title-${String(t).padStart(4, '0')}`;
  const edges: SimEdge[] = Array.from({ length: c.edges }, (_, i) => {
    const titles = new Set<string>();
    const held = new Map<number, number>();
    const e: SimEdge = {
      view: { id: `edge-${i + 1}`, url: `http://edge-${i + 1}`, region: 'sim', load: 0, titles },
      held,
      served: 0,
      active: 0,
      cache: new LRUCache<number, number>({
        maxSize: c.capacityBytes,
        sizeCalculation: (v) => v,
        // Inventory follows the cache, as an edge's heartbeat does.
        dispose: (_v, key) => {
          const t = Math.floor(key / c.segments);
          const n = (held.get(t) ?? 1) - 1;
          if (n <= 0) {
            held.delete(t);
            titles.delete(titleName(t));
          } else held.set(t, n);
        },
      }),
    };
    return e;
  });
  const views = edges.map((e) => e.view);
  const byId = new Map(edges.map((e) => [e.view.id, e]));
  const impl = getPolicy(policy);
  const siteOrder = ['sim'];
  let seq = 0;
  let sessions = 0;

  const start = (): Session => {
    const title = zipf.rank(rand());
    // Geometric length (≥ 1) with the configured mean, capped at the title's end.
    const len = Math.min(c.segments, 1 + Math.floor(Math.log(1 - rand()) / Math.log(1 - 1 / c.sessionMean)));
    const first = impl.rank({ title: titleName(title), edges: views, siteOrder, epsilon: c.epsilon, loadQuantum: 1, random: rand, seq: seq++ })[0]!;
    const edge = byId.get(first.edge.id)!;
    edge.active++;
    edge.view.load = edge.active;
    sessions++;
    return { title, next: 0, end: len, edge };
  };

  const slots: Session[] = Array.from({ length: c.concurrency }, start);
  const warmupEnd = Math.floor(c.requests * c.warmup);
  let hits = 0;
  let counted = 0;
  let activeRatioSum = 0;
  let activeRatioMax = 0;
  let samples = 0;
  for (let r = 0; r < c.requests; r++) {
    const slot = r % c.concurrency;
    let s = slots[slot]!;
    if (s.next >= s.end) {
      s.edge.active--;
      s.edge.view.load = s.edge.active;
      s = slots[slot] = start();
    }
    const key = s.title * c.segments + s.next++;
    const e = s.edge;
    const hit = e.cache.get(key) !== undefined;
    if (!hit) {
      e.cache.set(key, c.segmentBytes);
      if (e.cache.has(key)) {
        e.held.set(s.title, (e.held.get(s.title) ?? 0) + 1);
        if (c.inventory) e.view.titles.add(titleName(s.title));
      }
    }
    e.served += c.segmentBytes;
    if (r >= warmupEnd) {
      counted++;
      if (hit) hits++;
    }
    if (r % 1000 === 999) {
      let max = 0;
      for (const x of edges) max = Math.max(max, x.active);
      const ratio = max / (c.concurrency / c.edges);
      activeRatioSum += ratio;
      activeRatioMax = Math.max(activeRatioMax, ratio);
      samples++;
    }
  }
  const servedMean = edges.reduce((a, e) => a + e.served, 0) / edges.length;
  const servedMax = Math.max(...edges.map((e) => e.served));
  return {
    policy,
    edges: c.edges,
    capacityBytes: c.capacityBytes,
    hitRatio: hits / counted,
    originShare: 1 - hits / counted,
    peakMeanBytes: servedMax / servedMean,
    peakMeanActive: activeRatioSum / Math.max(1, samples),
    maxPeakMeanActive: activeRatioMax,
    sessions,
  };
}

function main(): void {
  const policies = values.policies!.split(',').map((p) => p.trim());
  for (const p of policies) if (!isPolicyName(p)) throw new Error(`--policies: "${p}" is not one of ${POLICY_NAMES.join(', ')}`);
  const edgeCounts = values.edges!.split(',').map(Number);
  if (!edgeCounts.every((n) => Number.isInteger(n) && n >= 1)) throw new Error('--edges: a comma-separated list of edge counts, e.g. 4,16');
  const capacities = values.capacity!.split(',').map((s) => parseBytes(s.trim()));
  const base = {
    titles: Number(values.titles),
    zipf: Number(values.zipf),
    segments: Number(values.segments),
    segmentBytes: parseBytes(values['segment-bytes']!),
    requests: Number(values.requests),
    concurrency: Number(values.concurrency),
    sessionMean: Number(values['session-mean']),
    warmup: Number(values.warmup),
    epsilon: Number(values.epsilon),
    seed: Number(values.seed),
    inventory: !values['no-inventory'],
  };
  const results: SimResult[] = [];
  const t0 = Date.now();
  for (const capacityBytes of capacities) {
    for (const n of edgeCounts) {
      for (const p of policies) results.push(simulate(p as PolicyName, { ...base, edges: n, capacityBytes }));
    }
  }
  if (values.json) {
    process.stdout.write(`${JSON.stringify({ config: base, results })}\n`);
    return;
  }
  const catalogBytes = base.titles * base.segments * base.segmentBytes;
  process.stdout.write(
    `steering simulation: ${base.titles} titles × ${base.segments} segments × ${formatBytes(base.segmentBytes)} (catalog ${formatBytes(catalogBytes)}), ` +
      `Zipf(${base.zipf}), ${base.requests.toLocaleString('en-US')} requests, ${base.concurrency} concurrent sessions (mean ${base.sessionMean} segments), ε=${base.epsilon}, seed ${base.seed}` +
      `${base.inventory ? '' : ', inventory off'}\n\n`,
  );
  for (const capacityBytes of capacities) {
    for (const n of edgeCounts) {
      const rows = results.filter((r) => r.edges === n && r.capacityBytes === capacityBytes);
      const random = rows.find((r) => r.policy === 'random');
      process.stdout.write(`${n} edges × ${formatBytes(capacityBytes)} (cluster ${((n * capacityBytes * 100) / catalogBytes).toFixed(1)}% of the catalog)\n`);
      process.stdout.write(
        `${renderTable(
          ['policy', 'hit ratio', 'vs random', 'origin share', 'peak/mean bytes', 'peak/mean active (avg)', 'peak/mean active (max)'],
          rows.map((r) => [
            r.policy,
            `${(r.hitRatio * 100).toFixed(1)}%`,
            random ? `${(r.hitRatio / random.hitRatio).toFixed(2)}×` : '',
            `${(r.originShare * 100).toFixed(1)}%`,
            r.peakMeanBytes.toFixed(2),
            r.peakMeanActive.toFixed(2),
            r.maxPeakMeanActive.toFixed(2),
          ]),
        )}\n\n`,
      );
    }
  }
  process.stdout.write(`(${((Date.now() - t0) / 1000).toFixed(1)} s)\n`);
}

main();

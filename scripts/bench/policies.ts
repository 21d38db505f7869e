/**
 * Edge eviction policies (lru, sieve, s3fifo) on one seeded trace, without sockets: byte and
 * object hit ratio per policy and capacity, and get() throughput relative to lru.
 *
 *   npm run bench:policies -- [--objects 20000] [--requests 1000000] [--zipf 0.9]
 *                             [--min-size 100KB] [--max-size 2MB] [--capacity 0.02,0.05,0.1]
 *                             [--warmup 0.1] [--seed 1] [--rounds 5] [--json]
 *
 * Workload: `objects` segments whose sizes are log-uniform between min-size and max-size (a
 * rendition ladder: 4 s segments from ~200 kbit/s to ~4 Mbit/s), requested by Zipf(s)
 * popularity; a miss stores the object. `--capacity` is a share of the unique bytes. Hit ratios
 * count requests after the `warmup` share. They are exact for the arguments (same arguments,
 * same numbers).
 *
 * Speed: get() over the trace's first million keys on a store filled by the replay at the middle
 * capacity, hits and misses as they come. Policies run in a rotating order each round so a noisy
 * neighbour hits all alike; reported is each policy's median ratio of ops/s to lru's in the same
 * round (above 1: faster than lru). Ratios, not absolute times: the machine is shared.
 */
import { parseArgs } from 'node:util';
import { formatBytes, parseBytes } from '../../common/units.ts';
import { mulberry32, Zipf } from '../../common/zipf.ts';
import { renderTable } from '../../common/table.ts';
import { CACHE_POLICIES, createByteStore, type ByteStore, type CachePolicy } from '../../edge/policies/index.ts';

const { values } = parseArgs({
  options: {
    objects: { type: 'string', default: '20000' },
    requests: { type: 'string', default: '1000000' },
    zipf: { type: 'string', default: '0.9' },
    'min-size': { type: 'string', default: '100KB' },
    'max-size': { type: 'string', default: '2MB' },
    capacity: { type: 'string', default: '0.02,0.05,0.1' },
    warmup: { type: 'string', default: '0.1' },
    seed: { type: 'string', default: '1' },
    rounds: { type: 'string', default: '5' },
    json: { type: 'boolean', default: false },
  },
});

interface Workload {
  keys: string[];
  sizes: number[];
  /** Object index per request. */
  trace: Uint32Array;
  uniqueBytes: number;
}

interface HitResult {
  policy: CachePolicy;
  capacityShare: number;
  capacityBytes: number;
  byteHitRatio: number;
  objectHitRatio: number;
}

function workload(objects: number, requests: number, s: number, minSize: number, maxSize: number, seed: number): Workload {
  const rng = mulberry32(seed);
  const keys: string[] = [];
  const sizes: number[] = [];
  let uniqueBytes = 0;
  for (let i = 0; i < objects; i++) {
    keys.push(`/vod/t${i >> 7}/seg-${i}.m4s`);
    const size = Math.round(minSize * (maxSize / minSize) ** rng());
    sizes.push(size);
    uniqueBytes += size;
  }
  const zipf = new Zipf(objects, s);
  const trace = new Uint32Array(requests);
  for (let r = 0; r < requests; r++) trace[r] = zipf.rank(rng()) - 1;
  return { keys, sizes, trace, uniqueBytes };
}

/** Replays the trace; the value stored is the object's index. */
function replay(
  policy: CachePolicy,
  w: Workload,
  capacityBytes: number,
  warmup: number,
): { store: ByteStore<number>; hits: number; hitBytes: number; reqs: number; reqBytes: number } {
  const store = createByteStore<number>(policy, { maxBytes: capacityBytes });
  const warmupEnd = Math.floor(w.trace.length * warmup);
  let hits = 0;
  let hitBytes = 0;
  let reqs = 0;
  let reqBytes = 0;
  for (let r = 0; r < w.trace.length; r++) {
    const i = w.trace[r]!;
    const key = w.keys[i]!;
    const size = w.sizes[i]!;
    const hit = store.get(key) !== undefined;
    if (!hit) store.set(key, i, size);
    if (r >= warmupEnd) {
      reqs++;
      reqBytes += size;
      if (hit) {
        hits++;
        hitBytes += size;
      }
    }
  }
  return { store, hits, hitBytes, reqs, reqBytes };
}

function timeGets(store: ByteStore<number>, keys: string[]): number {
  let found = 0;
  const t0 = performance.now();
  for (let i = 0; i < keys.length; i++) if (store.get(keys[i]!) !== undefined) found++;
  const ms = performance.now() - t0;
  if (found < 0) console.log(found); // keeps the loop from being optimised away
  return ms;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function main(): void {
  const objects = Number(values.objects);
  const requests = Number(values.requests);
  const s = Number(values.zipf);
  const minSize = parseBytes(values['min-size']!);
  const maxSize = parseBytes(values['max-size']!);
  const shares = values.capacity!.split(',').map((x) => Number(x.trim()));
  const warmup = Number(values.warmup);
  const seed = Number(values.seed);
  const rounds = Number(values.rounds);
  if (!shares.every((x) => x > 0 && x <= 1)) throw new Error('--capacity: shares of the unique bytes in (0, 1], e.g. 0.02,0.05,0.1');
  if (!(minSize >= 1 && maxSize >= minSize)) throw new Error('--min-size/--max-size: 1 ≤ min ≤ max');
  if (!(Number.isInteger(rounds) && rounds >= 1)) throw new Error('--rounds: a whole number ≥ 1');

  const w = workload(objects, requests, s, minSize, maxSize, seed);
  const results: HitResult[] = [];
  const speedShare = shares[Math.floor(shares.length / 2)]!;
  const filled = new Map<CachePolicy, ByteStore<number>>();
  for (const share of shares) {
    const capacityBytes = Math.floor(w.uniqueBytes * share);
    for (const policy of CACHE_POLICIES) {
      const r = replay(policy, w, capacityBytes, warmup);
      results.push({ policy, capacityShare: share, capacityBytes, byteHitRatio: r.hitBytes / r.reqBytes, objectHitRatio: r.hits / r.reqs });
      if (share === speedShare) filled.set(policy, r.store);
    }
  }

  const getKeys = Array.from(w.trace.subarray(0, 1_000_000), (i) => w.keys[i]!);
  for (const p of CACHE_POLICIES) timeGets(filled.get(p)!, getKeys); // warm the JIT for all before timing
  const ratios = new Map<CachePolicy, number[]>(CACHE_POLICIES.map((p) => [p, []]));
  for (let round = 0; round < rounds; round++) {
    const order = CACHE_POLICIES.map((_, i) => CACHE_POLICIES[(i + round) % CACHE_POLICIES.length]!);
    const ms = new Map<CachePolicy, number>();
    for (const p of order) ms.set(p, timeGets(filled.get(p)!, getKeys));
    for (const p of CACHE_POLICIES) ratios.get(p)!.push(ms.get('lru')! / ms.get(p)!);
  }
  const getOpsVsLru = Object.fromEntries(CACHE_POLICIES.map((p) => [p, Number(median(ratios.get(p)!).toFixed(3))])) as Record<CachePolicy, number>;

  const config = {
    objects,
    requests,
    zipf: s,
    minSize,
    maxSize,
    uniqueBytes: w.uniqueBytes,
    capacity: shares,
    warmup,
    seed,
    rounds,
    speedCapacity: speedShare,
    getsTimed: getKeys.length,
  };
  if (values.json) {
    console.log(JSON.stringify({ config, results, getOpsVsLru }, null, 2));
    return;
  }
  console.log(
    `${objects} objects (${formatBytes(minSize)}–${formatBytes(maxSize)} log-uniform, ${formatBytes(w.uniqueBytes)} unique), ${requests} requests, Zipf(${s}), seed ${seed}, warm-up ${warmup * 100}%\n`,
  );
  const pct = (x: number) => `${(x * 100).toFixed(2)}%`;
  console.log(
    renderTable(
      ['capacity', 'bytes', 'policy', 'byte hit ratio', 'object hit ratio', 'BHR vs lru'],
      results.map((r) => {
        const lru = results.find((x) => x.policy === 'lru' && x.capacityShare === r.capacityShare)!;
        return [
          pct(r.capacityShare),
          formatBytes(r.capacityBytes),
          r.policy,
          pct(r.byteHitRatio),
          pct(r.objectHitRatio),
          `${((r.byteHitRatio - lru.byteHitRatio) * 100).toFixed(2)} pp`,
        ];
      }),
    ),
  );
  console.log(`\nget() ops/s relative to lru (median of ${rounds} rounds, ${getKeys.length} gets on the ${pct(speedShare)} store):`);
  console.log(
    renderTable(
      ['policy', 'ops/s vs lru'],
      CACHE_POLICIES.map((p) => [p, `${getOpsVsLru[p].toFixed(2)}×`]),
    ),
  );
}

main();

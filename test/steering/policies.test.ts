import { describe, expect, it } from 'vitest';
import { mulberry32 } from '../../common/zipf.ts';
import { getPolicy, hrwBoundedPolicy, hrwScore, POLICY_NAMES, type EdgeView, type RankInput } from '../../steering/policies.ts';
import { DEFAULT_TOPOLOGY, Topology } from '../../steering/topology.ts';

const edge = (id: string, region = 'us-east', load = 0, titles: string[] = []): EdgeView => ({
  id,
  url: `http://127.0.0.1/${id}`,
  region,
  load,
  titles: new Set(titles),
});
const edges = (n: number, region = 'us-east') => Array.from({ length: n }, (_, i) => edge(`edge-${i + 1}`, region));
const input = (over: Partial<RankInput>): RankInput => ({
  title: 'title-0001',
  edges: [],
  siteOrder: ['us-east', 'us-west', 'eu-west'],
  epsilon: 0.25,
  random: mulberry32(1),
  seq: 0,
  ...over,
});
const titles = (n: number) => Array.from({ length: n }, (_, i) => `title-${String(i + 1).padStart(5, '0')}`);
const first = (name: (typeof POLICY_NAMES)[number], over: Partial<RankInput>) => getPolicy(name).rank(input(over))[0]!.edge.id;

describe('hash (rendezvous)', () => {
  it('gives the same edge for a title across calls, whatever the order edges are listed in', () => {
    const list = edges(10);
    const reversed = [...list].reverse();
    for (const title of titles(500)) {
      const a = first('hash', { title, edges: list });
      expect(first('hash', { title, edges: list })).toBe(a);
      expect(first('hash', { title, edges: reversed })).toBe(a);
    }
  });

  it('spreads titles evenly over the edges', () => {
    const list = edges(10);
    const count = new Map<string, number>();
    for (const title of titles(20_000)) {
      const id = first('hash', { title, edges: list });
      count.set(id, (count.get(id) ?? 0) + 1);
    }
    expect(count.size).toBe(10);
    for (const c of count.values()) expect(c / 20_000).toBeGreaterThan(0.08);
    for (const c of count.values()) expect(c / 20_000).toBeLessThan(0.12);
  });

  it('moves only the titles of an edge that leaves (~1/N of them), and nothing else', () => {
    const list = edges(10);
    const without = list.filter((e) => e.id !== 'edge-4');
    const all = titles(20_000);
    let moved = 0;
    for (const title of all) {
      const before = first('hash', { title, edges: list });
      const after = first('hash', { title, edges: without });
      if (before !== after) {
        moved++;
        expect(before).toBe('edge-4');
      }
    }
    expect(moved / all.length).toBeGreaterThan(0.07);
    expect(moved / all.length).toBeLessThan(0.13);
    // And when it comes back, exactly those titles return to it.
    for (const title of all.slice(0, 2_000)) expect(first('hash', { title, edges: [...without, list[3]!] })).toBe(first('hash', { title, edges: list }));
  });

  it('scores are uniform in [0, 1) and differ per edge', () => {
    const s = new Set<number>();
    for (const t of titles(1_000)) {
      const v = hrwScore(t, 'edge-1');
      expect(v).toBeGreaterThanOrEqual(0);
      expect(v).toBeLessThan(1);
      s.add(v);
    }
    expect(s.size).toBe(1_000);
  });
});

describe('hrw-bounded', () => {
  it('ranks the client site first, then backup sites in the topology order, then unknown regions', () => {
    const topo = new Topology(DEFAULT_TOPOLOGY);
    const list = [edge('e1', 'eu-west'), edge('w1', 'us-west'), edge('x1', 'local'), edge('e2', 'us-east'), edge('w2', 'us-west')];
    const ranked = hrwBoundedPolicy.rank(input({ edges: list, siteOrder: topo.siteOrder('us-west') }));
    expect(ranked.map((r) => r.edge.region)).toEqual(['us-west', 'us-west', 'us-east', 'eu-west', 'local']);
    expect(ranked.map((r) => r.reason)).toEqual(['site+hash', 'site+hash', 'backup-site+hash', 'backup-site+hash', 'other-site+hash']);
    // Inside a tier: rendezvous order.
    expect(ranked[0]!.score).toBeGreaterThan(ranked[1]!.score);
    // From eu-west, us-east is nearer than us-west.
    const fromEu = hrwBoundedPolicy.rank(input({ edges: list, siteOrder: topo.siteOrder('eu-west') }));
    expect(fromEu.map((r) => r.edge.region)).toEqual(['eu-west', 'us-east', 'us-west', 'us-west', 'local']);
  });

  it('never puts an overloaded edge first while its tier has one that is not (random loads)', () => {
    const rand = mulberry32(42);
    for (let round = 0; round < 2_000; round++) {
      const n = 2 + Math.floor(rand() * 6);
      const list = Array.from({ length: n }, (_, i) => edge(`edge-${i}`, rand() < 0.7 ? 'us-east' : 'us-west', Math.floor(rand() * 1_000)));
      const epsilon = rand() * 0.5;
      const ranked = hrwBoundedPolicy.rank(input({ title: `t${round}`, edges: list, epsilon }));
      // Per tier, every non-overloaded edge comes before every overloaded one.
      for (const region of ['us-east', 'us-west']) {
        const tier = list.filter((e) => e.region === region);
        if (tier.length === 0) continue;
        const bound = (1 + epsilon) * (tier.reduce((s, e) => s + e.load, 0) / tier.length);
        const order = ranked.filter((r) => r.edge.region === region);
        const firstOver = order.findIndex((r) => r.edge.load > bound);
        const lastUnder = order.map((r) => r.edge.load <= bound).lastIndexOf(true);
        if (firstOver !== -1) expect(lastUnder).toBeLessThan(firstOver);
        for (const r of order) expect(r.reason.endsWith('overload-skip')).toBe(r.edge.load > bound);
      }
      // The answer's first edge is from the client's site whenever the site has edges.
      if (list.some((e) => e.region === 'us-east')) expect(ranked[0]!.edge.region).toBe('us-east');
    }
  });

  it('skips the hash-preferred edge when it is overloaded, and keeps it when within (1+ε)·mean', () => {
    const list = edges(4);
    const preferred = first('hash', { edges: list });
    const loaded = list.map((e) => ({ ...e, load: e.id === preferred ? 200 : 100 })); // mean 125, bound 156
    const ranked = hrwBoundedPolicy.rank(input({ edges: loaded }));
    expect(ranked[0]!.edge.id).not.toBe(preferred);
    expect(ranked[0]!.reason).toBe('site+hash');
    expect(ranked.at(-1)!.edge.id).toBe(preferred);
    expect(ranked.at(-1)!.reason).toBe('site+overload-skip');
    // A larger ε tolerates it.
    expect(hrwBoundedPolicy.rank(input({ edges: loaded, epsilon: 1 }))[0]!.edge.id).toBe(preferred);
    // With everything equal (idle cluster) it is the plain rendezvous choice.
    expect(hrwBoundedPolicy.rank(input({ edges: list }))[0]!.edge.id).toBe(preferred);
  });

  it('lets an edge take one session over the bound (loadQuantum), so small counts stay sticky', () => {
    const list = edges(2);
    const preferred = first('hash', { edges: list });
    // One session on the preferred edge: 2 > 1.25 × mean(2, 0), but within one session of it.
    const oneSession = list.map((e) => ({ ...e, load: e.id === preferred ? 2 : 0 }));
    expect(hrwBoundedPolicy.rank(input({ edges: oneSession, loadQuantum: 2 }))[0]!.edge.id).toBe(preferred);
    expect(hrwBoundedPolicy.rank(input({ edges: oneSession, loadQuantum: 0 }))[0]!.edge.id).not.toBe(preferred);
    // Three sessions: 6 > 1.25 × 3 + 2, so the next one goes elsewhere.
    const threeSessions = list.map((e) => ({ ...e, load: e.id === preferred ? 6 : 0 }));
    expect(hrwBoundedPolicy.rank(input({ edges: threeSessions, loadQuantum: 2 }))[0]!.edge.id).not.toBe(preferred);
  });

  it('ranks edges holding the title before equal ones that do not', () => {
    const list = edges(5);
    const order = getPolicy('hash')
      .rank(input({ edges: list }))
      .map((r) => r.edge.id);
    const holders = new Set([order[3]!, order[1]!]);
    const withInventory = list.map((e) => (holders.has(e.id) ? { ...e, titles: new Set(['title-0001']) } : e));
    const ranked = hrwBoundedPolicy.rank(input({ edges: withInventory }));
    expect(ranked.slice(0, 2).map((r) => r.edge.id)).toEqual([order[1], order[3]]);
    expect(ranked[0]!.reason).toBe('site+inventory');
    expect(ranked[2]!.edge.id).toBe(order[0]);
    expect(ranked[2]!.reason).toBe('site+hash');
  });

  it('ranks QoE-demoted edges after the others of their tier', () => {
    const list = edges(3);
    const preferred = first('hash', { edges: list });
    const ranked = hrwBoundedPolicy.rank(input({ edges: list.map((e) => (e.id === preferred ? { ...e, demoted: true } : e)) }));
    expect(ranked.at(-1)!.edge.id).toBe(preferred);
    expect(ranked.at(-1)!.reason).toBe('site+qoe-demoted');
  });
});

describe('random, round-robin, least-loaded', () => {
  it('random returns every edge once, reproducibly for a seed, and varies the first', () => {
    const list = edges(5);
    const a = getPolicy('random')
      .rank(input({ edges: list, random: mulberry32(7) }))
      .map((r) => r.edge.id);
    const b = getPolicy('random')
      .rank(input({ edges: list, random: mulberry32(7) }))
      .map((r) => r.edge.id);
    expect(a).toEqual(b);
    expect([...a].sort()).toEqual(list.map((e) => e.id).sort());
    const rand = mulberry32(3);
    const firsts = new Set(Array.from({ length: 100 }, () => first('random', { edges: list, random: rand })));
    expect(firsts.size).toBe(5);
  });

  it('round-robin rotates the first edge with the request counter', () => {
    const list = edges(3);
    expect([0, 1, 2, 3].map((seq) => first('round-robin', { edges: list, seq }))).toEqual(['edge-1', 'edge-2', 'edge-3', 'edge-1']);
    expect(
      getPolicy('round-robin')
        .rank(input({ edges: list, seq: 1 }))
        .map((r) => r.edge.id),
    ).toEqual(['edge-2', 'edge-3', 'edge-1']);
  });

  it('least-loaded orders by load, lowest first', () => {
    const list = [edge('a', 'us-east', 30), edge('b', 'us-east', 10), edge('c', 'us-east', 20)];
    const ranked = getPolicy('least-loaded').rank(input({ edges: list }));
    expect(ranked.map((r) => r.edge.id)).toEqual(['b', 'c', 'a']);
    expect(ranked.map((r) => r.score)).toEqual([10, 20, 30]);
  });

  it('every policy returns every healthy edge exactly once with a reason, and nothing for no edges', () => {
    for (const name of POLICY_NAMES) {
      const list = [edge('a'), edge('b', 'us-west'), edge('c', 'eu-west'), edge('d', 'local')];
      const ranked = getPolicy(name).rank(input({ edges: list }));
      expect(ranked.map((r) => r.edge.id).sort()).toEqual(['a', 'b', 'c', 'd']);
      for (const r of ranked) {
        expect(r.reason).not.toBe('');
        expect(Number.isFinite(r.score)).toBe(true);
      }
      expect(getPolicy(name).rank(input({ edges: [] }))).toEqual([]);
    }
  });
});

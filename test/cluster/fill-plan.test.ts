import { describe, expect, it } from 'vitest';
import {
  type FillEdge,
  parseCopies,
  parseWindow,
  placeInSite,
  planFills,
  rankTitles,
  tierOf,
  titleBytes,
  windowOpenedAt,
  withinBudget,
} from '../../scripts/fill-plan.ts';
import { hrwScore } from '../../steering/policies.ts';
import { testCatalog } from '../steering/helpers.ts';

const edge = (id: string, region: string, holds: string[] = [], extra: Partial<FillEdge> = {}): FillEdge => ({
  id,
  url: `http://${id}`,
  region,
  healthy: true,
  holds: new Set(holds),
  ...extra,
});

describe('fill manifest and placement', () => {
  const catalog = testCatalog(6);

  it('ranks by recent sessions, then content-miss bytes, then catalog rank', () => {
    const demand = new Map([
      ['title-0004', { sessions: 2, segments: 10 }],
      ['title-0006', { sessions: 2, segments: 1, contentMissBytes: 5_000 }],
      ['title-0005', { sessions: 0, segments: 0, contentMissBytes: 9_000 }],
    ]);
    expect(rankTitles(catalog, demand, 5).map((t) => t.title.id)).toEqual(['title-0006', 'title-0004', 'title-0005', 'title-0001', 'title-0002']);
    expect(rankTitles(catalog, demand, 1)[0]!.why).toBe('recent: 2 sessions, 5000 content-miss bytes');
  });

  it("keeps each edge's manifest within 80% of its capacity, moving a copy to the next edge with room", () => {
    const bytes = titleBytes(catalog.titles[0]!);
    // Room for two titles each (2.5 titles x 0.8), three edges, one copy of six titles: six fit, spread in steering's order.
    const site = ['a', 'b', 'c'].map((id) => edge(id, 's', [], { capacityBytes: Math.floor(bytes * 2.5) }));
    const r = planFills({ catalog, demand: new Map(), edges: site, top: 6, copies: [1] });
    const per = new Map<string, number>();
    for (const m of r.manifest) per.set(m.edgeId, (per.get(m.edgeId) ?? 0) + m.bytes);
    for (const e of site) expect(per.get(e.id) ?? 0).toBeLessThanOrEqual(e.capacityBytes! * 0.8);
    expect(r.manifest.length + r.noRoom).toBe(6);
    expect(r.manifest.length).toBeGreaterThanOrEqual(5);
    // One edge with room for one title: the second title's copy finds none.
    const tiny = planFills({ catalog, demand: new Map(), edges: [edge('a', 's', [], { capacityBytes: Math.floor(bytes * 1.3) })], top: 2, copies: [1] });
    expect(tiny.manifest.map((m) => m.title)).toEqual(['title-0001']);
    expect(tiny.noRoom).toBe(1);
  });

  it('places copies on the site edges in the rendezvous order steering uses', () => {
    const site = [edge('a', 's'), edge('b', 's'), edge('c', 's'), edge('d', 's')];
    for (const t of ['title-0001', 'title-0002', 'x']) {
      const expected = [...site].sort((p, q) => hrwScore(t, q.id) - hrwScore(t, p.id)).map((e) => e.id);
      expect(placeInSite(t, site).map((e) => e.id)).toEqual(expected);
    }
  });

  it('tiers: --copies 3,2,1 over 6 titles gives 2 titles each 3, 2 and 1 copies per site', () => {
    expect([0, 1, 2, 3, 4, 5].map((i) => tierOf(i, 6, 3))).toEqual([0, 0, 1, 1, 2, 2]);
    const edges = ['a', 'b', 'c'].map((id) => edge(id, 's1')).concat(['d', 'e'].map((id) => edge(id, 's2')));
    const { manifest, fills, held } = planFills({ catalog, demand: new Map(), edges, top: 6, copies: [3, 2, 1] });
    const perSite = (title: string, site: string) => manifest.filter((m) => m.title === title && edges.find((e) => e.id === m.edgeId)!.region === site).length;
    expect([1, 2, 3, 4, 5, 6].map((n) => perSite(`title-000${n}`, 's1'))).toEqual([3, 3, 2, 2, 1, 1]);
    // A site with 2 edges holds at most 2 copies.
    expect([1, 2, 3, 4, 5, 6].map((n) => perSite(`title-000${n}`, 's2'))).toEqual([2, 2, 2, 2, 1, 1]);
    expect(held).toBe(0);
    expect(fills).toHaveLength(manifest.length);
    // The single copy of a tier-2 title is on the edge steering sends players to first.
    const t6 = manifest.find((m) => m.title === 'title-0006' && m.edgeId !== 'd' && m.edgeId !== 'e')!;
    expect(t6.edgeId).toBe(placeInSite('title-0006', edges.slice(0, 3))[0]!.id);
    // Plan order: tier, then copy, then title rank.
    expect(fills.slice(0, 4).map((f) => [f.title, f.copy])).toEqual([
      ['title-0001', 0],
      ['title-0001', 0],
      ['title-0002', 0],
      ['title-0002', 0],
    ]);
  });

  it('diffs against inventories; a lacking edge fills from a site peer, else its shield, else S3', () => {
    const t = 'title-0001';
    const site = [edge('a', 's'), edge('b', 's'), edge('c', 's')];
    const [first, second, third] = placeInSite(t, site).map((e) => e.id) as [string, string, string];
    const holding = site.map((e) => (e.id === third ? edge(e.id, 's', [t]) : e));
    const one = planFills({ catalog: testCatalog(1), demand: new Map(), edges: holding, top: 1, copies: [2] });
    expect(one.held).toBe(0);
    expect(one.fills.map((f) => [f.edgeId, f.source])).toEqual([
      [first, { kind: 'peer', edgeId: third, url: `http://${third}` }],
      [second, { kind: 'peer', edgeId: third, url: `http://${third}` }],
    ]);
    const held = planFills({
      catalog: testCatalog(1),
      demand: new Map(),
      edges: site.map((e) => (e.id === first ? edge(e.id, 's', [t]) : e)),
      top: 1,
      copies: [2],
    });
    expect(held.held).toBe(1);
    expect(held.fills.map((f) => f.edgeId)).toEqual([second]);
    // Nobody in the site holds it: the shield when the edge has one, else S3; a peer in another site does not count.
    const far = [edge('a', 's', [], { parent: 'http://shield' }), edge('z', 'other', [t])];
    const cold = planFills({ catalog: testCatalog(1), demand: new Map(), edges: far, top: 1, copies: [1] });
    expect(cold.fills.find((f) => f.edgeId === 'a')!.source).toEqual({ kind: 'shield', url: 'http://shield' });
    const s3 = planFills({ catalog: testCatalog(1), demand: new Map(), edges: [edge('a', 's')], top: 1, copies: [1] });
    expect(s3.fills[0]!.source).toEqual({ kind: 's3' });
    // Unhealthy edges get no manifest.
    expect(planFills({ catalog: testCatalog(1), demand: new Map(), edges: [edge('a', 's', [], { healthy: false })], top: 1, copies: [1] }).manifest).toEqual(
      [],
    );
  });

  it('a budget admits fills in plan order while they fit, the rest wait for the next window', () => {
    const f = [{ bytes: 50 }, { bytes: 40 }, { bytes: 20 }, { bytes: 10 }];
    const { admitted, deferred } = withinBudget(f, 75);
    expect(admitted).toEqual([{ bytes: 50 }, { bytes: 20 }]);
    expect(deferred).toEqual([{ bytes: 40 }, { bytes: 10 }]);
    expect(titleBytes(catalog.titles[0]!)).toBe(Math.ceil(((400_000 + 1_200_000 + 3_300_000) * 8) / 8));
  });

  it('parses copies and windows; a window may wrap past midnight', () => {
    expect(parseCopies('3,2,1')).toEqual([3, 2, 1]);
    expect(() => parseCopies('3,0')).toThrow(/--copies/);
    expect(() => parseWindow('25:00-01:00')).toThrow(/--window/);
    expect(windowOpenedAt(parseWindow('always'), new Date())).toBe(0);
    const day = parseWindow('02:00-14:00');
    expect(windowOpenedAt(day, new Date(2026, 0, 5, 1, 59))).toBeUndefined();
    expect(windowOpenedAt(day, new Date(2026, 0, 5, 2, 0))).toBe(new Date(2026, 0, 5, 2, 0).getTime());
    expect(windowOpenedAt(day, new Date(2026, 0, 5, 13, 59))).toBe(new Date(2026, 0, 5, 2, 0).getTime());
    expect(windowOpenedAt(day, new Date(2026, 0, 5, 14, 0))).toBeUndefined();
    const night = parseWindow('22:00-06:00');
    expect(windowOpenedAt(night, new Date(2026, 0, 5, 23, 0))).toBe(new Date(2026, 0, 5, 22, 0).getTime());
    expect(windowOpenedAt(night, new Date(2026, 0, 6, 5, 0))).toBe(new Date(2026, 0, 5, 22, 0).getTime());
    expect(windowOpenedAt(night, new Date(2026, 0, 6, 12, 0))).toBeUndefined();
  });
});

import { describe, expect, it } from 'vitest';
import { rankForFill, recentDemand } from '../../scripts/fill.ts';
import { testCatalog } from '../steering/helpers.ts';

describe('proactive fill ranking', () => {
  const catalog = testCatalog(6); // title-0001 … title-0006, catalog rank = number

  it('without recent demand, follows the catalog popularity rank', () => {
    expect(rankForFill(catalog, new Map(), 3)).toEqual([
      { id: 'title-0001', why: 'catalog rank 1' },
      { id: 'title-0002', why: 'catalog rank 2' },
      { id: 'title-0003', why: 'catalog rank 3' },
    ]);
  });

  it('puts what players asked for recently first (sessions, then segments), the catalog after', () => {
    const demand = new Map([
      ['title-0005', { sessions: 9, segments: 100 }],
      ['title-0004', { sessions: 9, segments: 300 }],
      ['title-0006', { sessions: 1, segments: 5 }],
    ]);
    expect(rankForFill(catalog, demand, 5).map((t) => t.id)).toEqual(['title-0004', 'title-0005', 'title-0006', 'title-0001', 'title-0002']);
    expect(rankForFill(catalog, demand, 1)[0]!.why).toBe('recent: 9 sessions, 300 segments');
  });

  it('an absent aggregator means no demand, not a failure', async () => {
    expect((await recentDemand('http://127.0.0.1:1')).size).toBe(0);
    expect((await recentDemand(undefined)).size).toBe(0);
  });
});

/**
 * The pieces around the miss join: steering's decision record (who was passed over and why),
 * the edge's session id and tier of an access, and the windows that turn classified accesses
 * into the partial aggregates /v1/qoe reads.
 */
import { Value } from '@sinclair/typebox/value';
import { describe, expect, it } from 'vitest';
import { SteeringDecisionSchema } from '../../common/contracts.ts';
import { sessionOfCmcd } from '../../edge/access-records.ts';
import { decisionRecord } from '../../steering/decision-log.ts';
import type { EdgeView, RankedEdge } from '../../steering/policies.ts';
import { aggFromJson, metricsOf } from '../../telemetry/merge.ts';
import { MissJoin } from '../../telemetry/miss-join.ts';
import { MISS_PARTITION_BASE, MissWindows } from '../../telemetry/miss-stream.ts';
import { AggregateView } from '../../telemetry/view.ts';

const T0 = 1_800_000_000_000;
const view = (id: string, region: string): EdgeView => ({ id, url: `http://${id}`, region, load: 0, titles: new Set<string>() });
const ranked = (e: EdgeView, reason: string): RankedEdge => ({ edge: e, reason, score: 0 });

describe('decisionRecord', () => {
  it('names the edges behind the first that were passed over for load or QoE, the ones out, and the ones cut from other sites', () => {
    const d = decisionRecord({
      sessionId: 's1',
      title: 'title-0001',
      site: 'us-east',
      ranked: [
        ranked(view('e2', 'us-east'), 'site+hash'),
        ranked(view('e1', 'us-east'), 'site+overload-skip'),
        ranked(view('e3', 'us-east'), 'site+qoe-demoted'),
      ],
      cut: [ranked(view('e9', 'eu-west'), 'backup-site+hash')],
      unhealthy: [view('e0', 'us-east')],
      ts: T0,
    });
    expect(Value.Check(SteeringDecisionSchema, d)).toBe(true);
    expect(d.ranked.map((r) => r.edge)).toEqual(['e2', 'e1', 'e3']);
    expect(d.skipped).toEqual([
      { edge: 'e1', site: 'us-east', why: 'overloaded' },
      { edge: 'e3', site: 'us-east', why: 'qoe-demoted' },
      { edge: 'e0', site: 'us-east', why: 'unhealthy' },
      { edge: 'e9', site: 'eu-west', why: 'not-in-site' },
    ]);
  });

  it('does not call the chosen edge passed over, whatever its reason', () => {
    const d = decisionRecord({ sessionId: 's', title: 't', site: 'a', ranked: [ranked(view('e1', 'a'), 'site+overload-skip')], unhealthy: [], ts: T0 });
    expect(d.skipped).toEqual([]);
  });
});

describe('access records at the edge', () => {
  it('takes the session from CMCD sid, query form (URL-encoded) or header form', () => {
    expect(sessionOfCmcd(encodeURIComponent('br=730,ot=v,sid="abc-1",su'), true)).toBe('abc-1');
    expect(sessionOfCmcd('sid="abc-2",st=v', false)).toBe('abc-2');
    expect(sessionOfCmcd('br=730', false)).toBeUndefined();
    expect(sessionOfCmcd(undefined, false)).toBeUndefined();
    expect(sessionOfCmcd('%E0%A4%A', true)).toBeUndefined();
    // Spellings the quick scan leaves to the full parser: lower-case escapes, escaped quotes, a longer key.
    expect(sessionOfCmcd('br%3d730%2csid%3d%22abc-3%22', true)).toBe('abc-3');
    expect(sessionOfCmcd('sid="a\\"b"', false)).toBe('a"b');
    expect(sessionOfCmcd('xsid="abc"', false)).toBeUndefined();
    expect(sessionOfCmcd('br=1,sid="abc-4"', false)).toBe('abc-4');
  });
});

describe('MissWindows', () => {
  const wopts = { windowMs: 10_000, graceMs: 5_000, lateRetentionMs: 60_000, provisionalMs: 0 };

  it('puts classified, unmatched and late bytes into per-window partials the read side merges', () => {
    const w = new MissWindows(wopts);
    const join = new MissJoin({
      joinWaitMs: 0,
      graceMs: 5_000,
      onUnmatched: (a) => w.addUnmatched(MISS_PARTITION_BASE, a),
      onLate: (a) => w.addLate(MISS_PARTITION_BASE, a),
    });
    join.addDecision({
      sessionId: 's1',
      title: 'title-1',
      site: 'us-east',
      ts: T0,
      ranked: [
        { edge: 'edge-1', site: 'us-east' },
        { edge: 'edge-2', site: 'us-east' },
      ],
      skipped: [],
    });
    const acc = (over: object) => ({
      sessionId: 's1',
      edge: 'edge-1',
      title: 'title-1',
      object: '/vod/title-1/a.ts',
      bytes: 100,
      tier: 'ram' as const,
      ts: T0 + 1_000,
      ...over,
    });
    join.addAccess(acc({}));
    join.addAccess(acc({ tier: 'origin', bytes: 200 }));
    join.addAccess(acc({ edge: 'edge-2', bytes: 300 }));
    join.addAccess(acc({ sessionId: 'nobody', bytes: 7 }));
    for (const j of join.drain(true)) w.addJoined(MISS_PARTITION_BASE, j);
    // Nothing final before the watermark passes window end + grace.
    expect(w.collect(T0 + 12_000, T0).every((r) => !r.final)).toBe(true);
    const records = w.collect(T0 + 15_000, T0);
    expect(records.length).toBeGreaterThan(0);
    expect(records.every((r) => r.final && r.partition === MISS_PARTITION_BASE)).toBe(true);
    const all = records.find((r) => r.dim === 'all')!;
    expect(metricsOf(aggFromJson(all.agg))).toMatchObject({
      localHitBytes: 100,
      contentMissBytes: 200,
      healthMissBytes: 300,
      otherMissBytes: 0,
      unmatchedAccesses: 1,
      unmatchedAccessBytes: 7,
    });
    // The region is the client's site of the decision: unmatched bytes have none.
    const region = records.find((r) => r.dim === 'region')!;
    expect(region.value).toBe('us-east');
    expect(aggFromJson(region.agg).unmatchedAccessBytes).toBe(0);
    // A late access still counts, in its window, as late.
    join.addDecision({ sessionId: 's1', title: 'title-1', site: 'us-east', ts: T0 + 30_000, ranked: [], skipped: [] });
    join.addAccess(acc({ ts: T0 + 2_000 }));
    const again = w.collect(T0 + 30_000, T0);
    expect(aggFromJson(again.find((r) => r.dim === 'edge' && r.value === 'edge-1')!.agg).lateAccesses).toBe(1);
    // Merged by the read side as /v1/qoe serves it.
    const v = new AggregateView();
    for (const r of [...records, ...again]) v.upsert(r);
    const edge1 = v.query({ by: 'edge', windowMs: 10_000 }).totals.find((t) => t.value === 'edge-1')!;
    expect(edge1).toMatchObject({ localHitBytes: 100, contentMissBytes: 200, lateAccesses: 1, unmatchedAccessBytes: 7 });
  });
});

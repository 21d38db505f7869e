/**
 * The cache-miss classifier and its event-time join, on hand-written decision and access
 * records: every class, a decision that arrives after its access, late and unmatched records.
 */
import { Value } from '@sinclair/typebox/value';
import { describe, expect, it } from 'vitest';
import { type EdgeAccess, EdgeAccessSchema, type SteeringDecision, SteeringDecisionSchema } from '../../common/contracts.ts';
import { bytesByClass, classifyAccess, MissJoin } from '../../telemetry/miss-join.ts';

const T0 = 1_800_000_000_000;

/** Client in us-east; edge-1 first, edge-2 same site second, edge-9 in eu-west third. */
const decision = (over: Partial<SteeringDecision> = {}): SteeringDecision => ({
  sessionId: 's1',
  title: 'title-0001',
  site: 'us-east',
  ts: T0,
  ranked: [
    { edge: 'edge-1', site: 'us-east' },
    { edge: 'edge-2', site: 'us-east' },
    { edge: 'edge-9', site: 'eu-west' },
  ],
  skipped: [],
  ...over,
});

const access = (over: Partial<EdgeAccess> = {}): EdgeAccess => ({
  sessionId: 's1',
  edge: 'edge-1',
  title: 'title-0001',
  object: '/vod/title-0001/730k/seg-00000.ts',
  bytes: 1_000,
  tier: 'ram',
  ts: T0 + 100,
  ...over,
});

describe('classifyAccess', () => {
  it('the records are valid by their contracts', () => {
    expect(Value.Check(SteeringDecisionSchema, decision({ skipped: [{ edge: 'edge-0', site: 'us-east', why: 'overloaded' }] }))).toBe(true);
    expect(Value.Check(EdgeAccessSchema, access())).toBe(true);
    expect(Value.Check(EdgeAccessSchema, access({ tier: 'tape' as never }))).toBe(false);
  });

  it('localHit: the first-ranked local edge from RAM or disk', () => {
    expect(classifyAccess(access(), decision()).cls).toBe('localHit');
    expect(classifyAccess(access({ tier: 'disk' }), decision()).cls).toBe('localHit');
  });

  it('contentMiss: the first-ranked local edge went to its shield or the origin', () => {
    expect(classifyAccess(access({ tier: 'origin' }), decision())).toEqual({ cls: 'contentMiss', reason: 'first-ranked local edge went to origin' });
    expect(classifyAccess(access({ tier: 'shield' }), decision()).cls).toBe('contentMiss');
  });

  it('healthMiss: a better local edge was passed over, or the player failed over down the ranking', () => {
    const passed = decision({ ranked: [{ edge: 'edge-2', site: 'us-east' }], skipped: [{ edge: 'edge-1', site: 'us-east', why: 'qoe-demoted' }] });
    // edge-2 is now the best local edge: from its cache it is a local hit, even though edge-1 was passed over.
    expect(classifyAccess(access({ edge: 'edge-2' }), passed).cls).toBe('localHit');
    const away = decision({ ranked: [{ edge: 'edge-9', site: 'eu-west' }], skipped: [{ edge: 'edge-1', site: 'us-east', why: 'unhealthy' }] });
    // The only local edge was down: another site served it.
    expect(classifyAccess(access({ edge: 'edge-9' }), away)).toEqual({ cls: 'healthMiss', reason: 'edge-1 passed over: unhealthy' });
    // No edge in the client's site at all, none passed over: the nearest site steering chose is local.
    const nearest = decision({
      ranked: [
        { edge: 'edge-9', site: 'eu-west' },
        { edge: 'edge-8', site: 'eu-west' },
      ],
    });
    expect(classifyAccess(access({ edge: 'edge-9' }), nearest)).toEqual({
      cls: 'localHit',
      reason: 'first-ranked edge of the nearest site eu-west (none in client site us-east), from cache',
    });
    expect(classifyAccess(access({ edge: 'edge-9', tier: 'origin' }), nearest).cls).toBe('contentMiss');
    expect(classifyAccess(access({ edge: 'edge-8' }), nearest)).toEqual({ cls: 'healthMiss', reason: 'failover to rank 2' });
    expect(classifyAccess(access({ edge: 'edge-9' }), decision({ ranked: [] }))).toEqual({ cls: 'otherMiss', reason: 'steering ranked no edge' });
    const overloadedStillRanked = decision({ skipped: [{ edge: 'edge-0', site: 'us-east', why: 'overloaded' }] });
    expect(classifyAccess(access({ edge: 'edge-2' }), overloadedStillRanked)).toEqual({ cls: 'healthMiss', reason: 'edge-0 passed over: overloaded' });
    expect(classifyAccess(access({ edge: 'edge-2' }), decision())).toEqual({ cls: 'healthMiss', reason: 'failover to rank 2' });
    expect(classifyAccess(access({ edge: 'edge-9', tier: 'origin' }), decision())).toEqual({ cls: 'healthMiss', reason: 'failover to rank 3' });
  });

  it('otherMiss: an edge steering never ranked, with the reason', () => {
    expect(classifyAccess(access({ edge: 'edge-7' }), decision())).toEqual({ cls: 'otherMiss', reason: 'served by an edge steering did not rank' });
    // A passed-over edge of another site is not the client's loss.
    expect(classifyAccess(access({ edge: 'edge-7' }), decision({ skipped: [{ edge: 'edge-8', site: 'eu-west', why: 'not-in-site' }] })).cls).toBe('otherMiss');
  });
});

describe('MissJoin', () => {
  it('joins in event time, waiting for a decision that arrives after its access, and sums bytes per class', () => {
    const j = new MissJoin({ joinWaitMs: 1_000, graceMs: 5_000 });
    j.addAccess(access({ ts: T0 + 100, bytes: 10 }));
    j.addAccess(access({ ts: T0 + 200, bytes: 20, tier: 'origin' }));
    // Nothing is due yet: the watermark has not passed the accesses' wait.
    expect(j.drain()).toEqual([]);
    j.addDecision(decision({ ts: T0 + 50 }));
    j.addAccess(access({ sessionId: 's2', ts: T0 + 3_000, bytes: 5 }));
    const out = j.drain();
    expect(out.map((x) => x.cls)).toEqual(['localHit', 'contentMiss']);
    expect(bytesByClass(out)).toEqual({ localHitBytes: 10, contentMissBytes: 20, healthMissBytes: 0, otherMissBytes: 0 });
    // s2 never gets a decision: unmatched on flush, with its bytes.
    expect(j.drain(true)).toEqual([]);
    expect(j.counts).toMatchObject({ unmatched: 1, unmatchedBytes: 5, late: 0 });
  });

  it('uses the decision in force at the access: a re-steer after failover changes the class', () => {
    const j = new MissJoin({ joinWaitMs: 0 });
    j.addDecision(decision({ ts: T0 }));
    j.addDecision(
      decision({ ts: T0 + 10_000, ranked: [{ edge: 'edge-2', site: 'us-east' }], skipped: [{ edge: 'edge-1', site: 'us-east', why: 'unhealthy' }] }),
    );
    j.addAccess(access({ edge: 'edge-2', ts: T0 + 5_000 }));
    j.addAccess(access({ edge: 'edge-2', ts: T0 + 12_000 }));
    expect(j.drain(true).map((x) => [x.cls, x.reason])).toEqual([
      ['healthMiss', 'failover to rank 2'],
      ['localHit', 'first-ranked local edge, from cache'],
    ]);
  });

  it('counts an access older than the watermark by more than the grace as late, never classified', () => {
    const j = new MissJoin({ joinWaitMs: 0, graceMs: 1_000 });
    j.addDecision(decision({ ts: T0 + 60_000 }));
    j.addAccess(access({ ts: T0 }));
    expect(j.drain(true)).toEqual([]);
    expect(j.counts.late).toBe(1);
  });

  it('keeps at most maxSessions decisions, counting the ones it lets go', () => {
    const j = new MissJoin({ maxSessions: 2 });
    for (const s of ['a', 'b', 'c']) j.addDecision(decision({ sessionId: s }));
    expect(j.counts.decisionsEvicted).toBe(1);
    j.addAccess(access({ sessionId: 'a' }));
    j.drain(true);
    expect(j.counts.unmatched).toBe(1);
  });
});

/**
 * Why each byte missed (issue 15; after Netflix's "Driving Content Delivery Efficiency Through
 * Classifying Cache Misses"): an edge access record is joined, in event time, to the steering
 * decision of its session, and its bytes fall in one class:
 *
 * - localHit: served from cache (RAM or disk) by the first-ranked edge of the client's site (of the
 *   nearest site steering chose when the client's has no edge at all);
 * - contentMiss: that edge served it but did not hold it (it went upstream);
 * - healthMiss: another edge served it because a better one was passed over at decision time
 *   (unhealthy, overloaded, QoE-demoted), or because the player failed over down the ranking;
 * - otherMiss: anything else, with the reason.
 *
 * Accesses wait up to `joinWaitMs` of event time for a decision that arrives after them (the
 * topics are read independently); one still without a decision is counted unmatched, and one
 * older than the watermark minus `graceMs` is counted late. Nothing is dropped silently.
 */
import type { EdgeAccess, SteeringDecision } from '../common/contracts.ts';

export type MissClass = 'localHit' | 'contentMiss' | 'healthMiss' | 'otherMiss';
export const MISS_CLASSES: readonly MissClass[] = ['localHit', 'contentMiss', 'healthMiss', 'otherMiss'];

export interface Classified {
  cls: MissClass;
  reason: string;
}

/** The class of one access given its session's decision. */
export function classifyAccess(access: EdgeAccess, decision: SteeringDecision): Classified {
  // A client whose site has no edge at all (ranked or passed over) is local to the nearest site
  // steering chose: that site's first edge is the best it could have had.
  const siteHasEdges =
    decision.ranked.some((r) => r.site === decision.site) || decision.skipped.some((s) => s.site === decision.site && s.why !== 'not-in-site');
  const site = siteHasEdges ? decision.site : decision.ranked[0]?.site;
  const where = site === decision.site ? 'local edge' : `edge of the nearest site ${site} (none in client site ${decision.site})`;
  const best = decision.ranked.find((r) => r.site === site);
  const fromCache = access.tier === 'ram' || access.tier === 'disk';
  if (best !== undefined && access.edge === best.edge) {
    return fromCache
      ? { cls: 'localHit', reason: `first-ranked ${where}, from cache` }
      : { cls: 'contentMiss', reason: `first-ranked ${where} went to ${access.tier}` };
  }
  const passedOver = decision.skipped.find((s) => s.site === site && s.why !== 'not-in-site');
  if (passedOver !== undefined) return { cls: 'healthMiss', reason: `${passedOver.edge} passed over: ${passedOver.why}` };
  const at = decision.ranked.findIndex((r) => r.edge === access.edge);
  if (at > 0) return { cls: 'healthMiss', reason: `failover to rank ${at + 1}` };
  if (best === undefined) return { cls: 'otherMiss', reason: 'steering ranked no edge' };
  return { cls: 'otherMiss', reason: 'served by an edge steering did not rank' };
}

export interface MissJoinOptions {
  /** How long (event time) an access waits for its session's decision. */
  joinWaitMs: number;
  /** Accesses older than the watermark by more than this are late. */
  graceMs: number;
  /** Decisions older than the watermark by more than this are forgotten (sessions end). */
  decisionTtlMs: number;
  /** Most sessions whose decisions are kept; past it the oldest go (counted). */
  maxSessions: number;
  /** Sees each access counted late (so windows can count it by edge and title too). */
  onLate?: (a: EdgeAccess) => void;
  /** Sees each access counted unmatched. */
  onUnmatched?: (a: EdgeAccess) => void;
}

export const defaultMissJoinOptions: MissJoinOptions = { joinWaitMs: 5_000, graceMs: 10_000, decisionTtlMs: 30 * 60_000, maxSessions: 200_000 };

/** One classified access, as the window machinery consumes it. */
export interface JoinedAccess {
  access: EdgeAccess;
  /** The client's site in the decision it was joined to. */
  site: string;
  cls: MissClass;
  reason: string;
}

export interface JoinCounts {
  late: number;
  unmatched: number;
  unmatchedBytes: number;
  decisionsEvicted: number;
}

export class MissJoin {
  private readonly o: MissJoinOptions;
  /** Decisions per session, oldest first; a session re-steered (failover) has several. */
  private readonly decisions = new Map<string, SteeringDecision[]>();
  private readonly waiting: EdgeAccess[] = [];
  private watermarkMs = 0;
  readonly counts: JoinCounts = { late: 0, unmatched: 0, unmatchedBytes: 0, decisionsEvicted: 0 };

  constructor(o: Partial<MissJoinOptions> = {}) {
    this.o = { ...defaultMissJoinOptions, ...o };
  }

  get watermark(): number {
    return this.watermarkMs;
  }

  addDecision(d: SteeringDecision): void {
    const list = this.decisions.get(d.sessionId);
    if (list) {
      list.push(d);
      list.sort((a, b) => a.ts - b.ts);
    } else {
      if (this.decisions.size >= this.o.maxSessions) {
        const oldest = this.decisions.keys().next().value as string;
        this.decisions.delete(oldest);
        this.counts.decisionsEvicted++;
      }
      this.decisions.set(d.sessionId, [d]);
    }
    this.advance(d.ts);
  }

  /** Queues an access; late ones are counted and not queued. */
  addAccess(a: EdgeAccess): void {
    if (a.ts < this.watermarkMs - this.o.graceMs) {
      this.counts.late++;
      this.o.onLate?.(a);
      return;
    }
    this.waiting.push(a);
    this.advance(a.ts);
  }

  /**
   * Classifies every access whose wait is over at the current watermark (or all of them with
   * `flush`), in event-time order, and forgets decisions past their TTL.
   */
  drain(flush = false): JoinedAccess[] {
    const out: JoinedAccess[] = [];
    const due = flush ? Number.POSITIVE_INFINITY : this.watermarkMs - this.o.joinWaitMs;
    this.waiting.sort((x, y) => x.ts - y.ts);
    let n = 0;
    while (n < this.waiting.length && this.waiting[n]!.ts <= due) n++;
    for (const a of this.waiting.splice(0, n)) {
      const d = this.decisionFor(a);
      if (d === undefined) {
        this.counts.unmatched++;
        this.counts.unmatchedBytes += a.bytes;
        this.o.onUnmatched?.(a);
        continue;
      }
      out.push({ access: a, site: d.site, ...classifyAccess(a, d) });
    }
    const forgetBefore = this.watermarkMs - this.o.decisionTtlMs;
    for (const [sid, list] of this.decisions) if (list[list.length - 1]!.ts < forgetBefore) this.decisions.delete(sid);
    return out;
  }

  /** The session's latest decision made before the access, else its first one (clock skew). */
  private decisionFor(a: EdgeAccess): SteeringDecision | undefined {
    const list = this.decisions.get(a.sessionId);
    if (!list) return undefined;
    let found = list[0];
    for (const d of list) if (d.ts <= a.ts) found = d;
    return found;
  }

  /** Accesses waiting for their decision. */
  get waitingCount(): number {
    return this.waiting.length;
  }

  /** Moves the watermark on without a record: the caller's clock while no record arrives (idle topics). */
  advanceTo(ts: number): void {
    this.advance(ts);
  }

  private advance(ts: number): void {
    if (ts > this.watermarkMs) this.watermarkMs = ts;
  }
}

/** Bytes per class, summed: the figures `/v1/qoe` and `ocdn qoe misses` will carry. */
export function bytesByClass(joined: readonly JoinedAccess[]): Record<`${MissClass}Bytes`, number> {
  const out = { localHitBytes: 0, contentMissBytes: 0, healthMissBytes: 0, otherMissBytes: 0 };
  for (const j of joined) out[`${j.cls}Bytes`] += j.access.bytes;
  return out;
}

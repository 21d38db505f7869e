/**
 * The browser player's QoE events (console/public/qoe-events.js) pass the aggregator's own
 * validator (telemetry/validate.ts) and batch contract, for a whole session with a switch, a
 * stall and an error, as player-sim's do.
 */
import { describe, expect, it } from 'vitest';
import { EventBatchSchema, EVENT_BATCH_LIMITS } from '../../common/contracts.ts';
import { bodyValidator } from '../../common/http.ts';
import type { QoeEvent } from '../../telemetry/events.ts';
import { validateEvent } from '../../telemetry/validate.ts';
import { batchBodies, BrowserQoe, cacheStatusOf, renditionName } from '../../console/public/qoe-events.js';

function session(): QoeEvent[] {
  const events: QoeEvent[] = [];
  const q = new BrowserQoe({ title: 'title-0001', sessionId: 'b6a1c1de-0000-4000-8000-000000000001', send: (e) => events.push(e) });
  const t = 1_800_000_000_000;
  q.intent(t);
  q.segment({ rendition: '730k', bitrate: 730_000, index: 0, bytes: 365_000, ttfbMs: 12.4, downloadMs: 80.2, edgeId: 'edge-1', xCache: 'MISS' }, t + 90);
  q.firstFrame(t + 420, '730k', 730_000);
  q.segment({ rendition: '730k', bitrate: 730_000, index: 1, bytes: 365_000, ttfbMs: 3, downloadMs: 40, edgeId: 'edge-1', xCache: 'HIT' }, t + 4_000);
  q.switched(t + 5_000, '2000k', 2_000_000);
  q.segment({ rendition: '2000k', bitrate: 2_000_000, index: 2, bytes: 1_000_000, ttfbMs: 5, downloadMs: 300, edgeId: 'edge-2', xCache: null }, t + 5_400);
  q.stallStart(t + 8_000, 0.1);
  q.stallEnd(t + 8_750);
  q.error(t + 9_000, 'fragLoadError', 'networkError: fragLoadError (HTTP 502)', false, 'E_ORIGIN_UNAVAILABLE: upstream down');
  q.end(t + 12_000, 'aborted', 11.2);
  return events;
}

describe('browser QoE events', () => {
  it('every event of a session passes telemetry/validate.ts, in the order and with the fields player-sim sends', () => {
    const events = session();
    for (const e of events) expect(validateEvent(e), `${e.type} ${JSON.stringify(e)}`).toEqual({ ok: true, event: e });
    expect(events.map((e) => e.type)).toEqual([
      'session_start',
      'segment',
      'startup',
      'segment',
      'switch',
      'segment',
      'stall_start',
      'stall_end',
      'error',
      'session_end',
    ]);
    expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i));
    expect(new Set(events.map((e) => e.id)).size).toBe(events.length);
    expect(events.every((e) => e.device === 'browser')).toBe(true);
    // session_start waits for the first edge, so sessions count per edge.
    expect(events[0]).toMatchObject({ type: 'session_start', edgeId: 'edge-1', ts: 1_800_000_000_000 });
    expect(events[2]).toMatchObject({ type: 'startup', vstMs: 420 });
    expect(events[5]).toMatchObject({ type: 'segment', edgeId: 'edge-2', cacheStatus: 'UNKNOWN', throughputBps: Math.round((1_000_000 * 8 * 1000) / 295) });
    expect(events[7]).toMatchObject({ type: 'stall_end', stallMs: 750 });
    const end = events.at(-1)!;
    expect(end).toMatchObject({ type: 'session_end', exitReason: 'aborted', started: true, switches: 1, stalledS: 0.75, bytes: 1_730_000, playedS: 11.2 });
    // Time-weighted over playing time: 730k for 4.58 s, 2000k for 3 s + 3.25 s.
    const avg = (end as Extract<QoeEvent, { type: 'session_end' }>).avgBitrate;
    expect(avg).toBe(Math.round((730_000 * 4_580 + 2_000_000 * 6_250) / 10_830));
  });

  it('a session that fails before its first frame ends as a start failure, still valid', () => {
    const events: QoeEvent[] = [];
    const q = new BrowserQoe({ title: 't', sessionId: 's-1', send: (e) => events.push(e) });
    q.intent(1_000);
    q.error(1_500, 'manifestLoadError', 'networkError: manifestLoadError (HTTP 404)', true);
    q.end(1_500, 'error', 0);
    expect(events.map((e) => e.type)).toEqual(['session_start', 'error', 'session_end']);
    expect(events.at(-1)).toMatchObject({ exitReason: 'start-failure', started: false, avgBitrate: 0 });
    for (const e of events) expect(validateEvent(e).ok, JSON.stringify(e)).toBe(true);
  });

  it('batches are POST /v1/events bodies within the contract and its byte bound', () => {
    const check = bodyValidator(EventBatchSchema, 'event batch');
    const many = Array.from({ length: 7 }, () => session()).flat();
    const bodies = batchBodies(many, 50);
    expect(bodies.length).toBe(Math.ceil(many.length / 50));
    let n = 0;
    for (const b of bodies) {
      expect(Buffer.byteLength(b)).toBeLessThanOrEqual(EVENT_BATCH_LIMITS.maxBodyBytes);
      n += check(JSON.parse(b)).events.length;
    }
    expect(n).toBe(many.length);
    // A byte bound below the count bound splits too.
    const small = batchBodies(many, 200, 4_000);
    for (const b of small) expect(Buffer.byteLength(b)).toBeLessThanOrEqual(4_000);
  });

  it('reads X-Cache and names renditions as the seeded ladders do', () => {
    expect(['HIT', 'miss', ' STALE ', 'COALESCED', null, 'BYPASS'].map(cacheStatusOf)).toEqual(['HIT', 'MISS', 'STALE', 'COALESCED', 'UNKNOWN', 'UNKNOWN']);
    expect(renditionName({ name: '730k', bitrate: 730_000 })).toBe('730k');
    expect(renditionName({ name: '3', bitrate: 2_000_000 })).toBe('2000k');
    expect(renditionName(undefined)).toBe('');
  });
});

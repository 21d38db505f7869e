import { describe, expect, it } from 'vitest';
import { isOcdnError } from '../../common/errors.ts';
import { createRequire } from 'node:module';
import { murmur2, partitionFor } from '../../telemetry/partitioner.ts';
import { assertEvent, EVENT_TYPES, parseEvent, parseMessage, validateEvent } from '../../telemetry/validate.ts';
import { dataset } from './helpers.ts';

const env = {
  v: 1,
  id: '7d1c6a34-5d43-4a55-9d36-1f2a3b4c5d6e',
  ts: 1_700_000_000_000,
  sessionId: 's',
  seq: 0,
  title: 't',
  edgeId: 'e1',
  region: 'eu',
  isp: 'i',
  device: 'tv',
  abr: 'bba',
};

describe('event validation (Ajv-compiled JSON Schema per type)', () => {
  it('accepts every event of the synthetic set, one per type at least', () => {
    const d = dataset();
    const seen = new Set<string>();
    for (const e of [...d.main, ...d.advance, ...d.late]) {
      const r = validateEvent(e);
      expect(r.ok, JSON.stringify(r)).toBe(true);
      seen.add(e.type);
    }
    expect([...seen].sort()).toEqual([...EVENT_TYPES].sort());
  });

  it('tolerates unknown fields (newer producers) and keeps them', () => {
    const r = validateEvent({ ...env, type: 'session_start', cdnHint: 'x', extra: { a: 1 } });
    expect(r.ok).toBe(true);
    if (r.ok) expect((r.event as unknown as { cdnHint: string }).cdnHint).toBe('x');
  });

  it.each([
    [{ ...env, type: 'startup', vstMs: '12', rendition: 'r', bitrate: 1 }, /vstMs must be number/],
    [{ ...env, type: 'segment', rendition: 'r' }, /missing field bitrate/],
    [
      { ...env, type: 'segment', rendition: 'r', bitrate: 1, index: 1, bytes: 1, ttfbMs: 1, downloadMs: 1, throughputBps: 1, cacheStatus: 'MAYBE' },
      /cacheStatus must be one of HIT/,
    ],
    [
      { ...env, type: 'session_end', playedS: 1, stalledS: 0, avgBitrate: 1, switches: 1.5, started: true, exitReason: 'completed', bytes: 1 },
      /switches must be integer/,
    ],
    [{ ...env, type: 'stall_end', stallMs: -1 }, /stallMs must be >= 0/],
    [{ ...env, ts: 'now', type: 'session_start' }, /ts must be number/],
    [{ ...env, sessionId: '', type: 'session_start' }, /sessionId must NOT have fewer than 1 characters/],
    [{ ...env, v: 2, type: 'session_start' }, /unsupported version v=2/],
    [{ ...env, type: 'teleport' }, /unknown event type "teleport"/],
    [{ ...env }, /missing field type/],
    [[1, 2], /not a JSON object/],
    [null, /not a JSON object/],
  ])('rejects %j with a reason', (input, reason) => {
    const r = validateEvent(input);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.reason).toMatch(reason);
  });

  it('parses wire bytes and reports what is wrong with them', () => {
    expect(parseEvent(Buffer.from(JSON.stringify({ ...env, type: 'session_start' }))).ok).toBe(true);
    const bad = parseEvent('{"v":1,');
    expect(bad.ok).toBe(false);
    if (!bad.ok) expect(bad.reason).toMatch(/^not JSON/);
    const empty = parseEvent(null);
    expect(empty.ok === false && empty.reason).toBe('empty message');
  });

  it('assertEvent throws BAD_EVENT with the reason', () => {
    try {
      assertEvent({ ...env, type: 'error', code: 'x', message: 'y', fatal: 'yes' });
      expect.fail('should throw');
    } catch (err) {
      expect(isOcdnError(err, 'E_BAD_EVENT')).toBe(true);
      expect((err as Error).message).toMatch(/fatal must be boolean/);
    }
  });
});

describe('packed messages', () => {
  it('unpacks newline-separated events and isolates a broken line', () => {
    const good = (i: number) => JSON.stringify({ ...env, id: `id-${i}`, seq: i, type: 'session_start' });
    const all = parseMessage(Buffer.from([good(0), good(1), good(2)].join('\n')));
    expect(all.map((r) => r.ok)).toEqual([true, true, true]);
    const mixed = parseMessage([good(0), '{"v":1,', JSON.stringify({ ...env, type: 'stall_end', stallMs: 'x' }), good(3)].join('\n'));
    expect(mixed.map((r) => r.ok)).toEqual([true, false, false, true]);
    const bad = mixed.filter((r) => !r.ok) as { reason: string; raw: string }[];
    expect(bad[0]!.raw).toBe('{"v":1,');
    expect(bad[0]!.reason).toMatch(/^not JSON/);
    expect(bad[1]!.reason).toMatch(/stallMs must be number/);
    // A line holding two JSON values must not shift the others.
    const shifted = parseMessage(['1,2', good(5)].join('\n'));
    expect(shifted.map((r) => r.ok)).toEqual([false, true]);
  });

  it("puts a session in the partition Kafka's default partitioner picks for its key", () => {
    const ref = createRequire(import.meta.url)('kafkajs/src/producer/partitioners/default/murmur2.js') as (k: string) => number;
    for (const key of ['', 'a', 'ab', 'abc', 'abcd', 'sess-1', 'ünïcødé', 'x'.repeat(101)]) expect(murmur2(key), key).toBe(ref(key));
    expect(partitionFor('sess-1', 6)).toBe((ref('sess-1') & 0x7fffffff) % 6);
  });
});

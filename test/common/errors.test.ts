import { Value } from '@sinclair/typebox/value';
import { describe, expect, it } from 'vitest';
import { CONTRACTS, ErrorBodySchema, EVENT_BATCH_LIMITS, EventBatchSchema, EdgeHeartbeatSchema, HEARTBEAT_LIMITS } from '../../common/contracts.ts';
import { ErrorCodes, httpStatus, OcdnError } from '../../common/errors.ts';
import { bodyValidator, errorBody, errorMessage, statusOf } from '../../common/http.ts';

describe('error code → HTTP status', () => {
  it('is one table covering every code', () => {
    // The whole mapping, spelled out: a changed status is a changed contract.
    const expected: Record<string, number> = {
      E_BAD_REQUEST: 400,
      E_BAD_EVENT: 400,
      E_USAGE: 400,
      E_UNAUTHORIZED: 401,
      E_FORBIDDEN: 403,
      E_NOT_FOUND: 404,
      E_GONE: 410,
      E_METHOD: 405,
      E_PAYLOAD_TOO_LARGE: 413,
      E_RANGE_NOT_SATISFIABLE: 416,
      E_HEADERS_TOO_LARGE: 431,
      E_REQUEST_TIMEOUT: 408,
      E_TOO_MANY: 429,
      E_UNSUPPORTED_MEDIA_TYPE: 415,
      E_CONFIG: 500,
      E_DEPENDENCY_MISSING: 500,
      E_PORT_IN_USE: 500,
      E_INTERNAL: 500,
      E_ORIGIN_UNAVAILABLE: 502,
      E_S3_UNREACHABLE: 502,
      E_BAD_PLAYLIST: 502,
      E_NO_EDGE: 503,
      E_NOT_READY: 503,
      E_BROKER_UNAVAILABLE: 503,
      E_BUSY: 503,
      E_ORIGIN_TIMEOUT: 504,
    };
    expect(Object.values(ErrorCodes).sort()).toEqual(Object.keys(expected).sort());
    for (const code of Object.values(ErrorCodes)) expect(httpStatus(code), code).toBe(expected[code]);
  });

  it('gives 500 and E_INTERNAL for anything that is not an OcdnError', () => {
    expect(statusOf(new Error('boom'))).toBe(500);
    expect(errorBody(new TypeError('x is not a function'))).toEqual({ error: { code: 'E_INTERNAL', message: 'internal error: x is not a function' } });
  });
});

describe('the error body', () => {
  it('has one shape, a one-line bounded message, and the details when there are some', () => {
    const b = errorBody(new OcdnError(ErrorCodes.BAD_REQUEST, `two\nlines   and ${'x'.repeat(2_000)}`, { details: { problems: ['a'] } }));
    expect(Value.Check(ErrorBodySchema, b)).toBe(true);
    expect(b.error.message).toMatch(/^two lines and x+…$/);
    expect(b.error.message.length).toBeLessThanOrEqual(500);
    expect(b.error.details).toEqual({ problems: ['a'] });
    expect(Value.Check(ErrorBodySchema, { error: { code: 'E_NOPE', message: 'x' } })).toBe(false);
  });

  it('reads back as "E_CODE: message" for clients, and any other text as its first line', () => {
    expect(errorMessage(JSON.stringify(errorBody(new OcdnError(ErrorCodes.NO_EDGE, 'no healthy edge'))))).toBe('E_NO_EDGE: no healthy edge');
    expect(errorMessage('bad gateway\nmore')).toBe('bad gateway');
    expect(errorMessage('{"reason":"old"}')).toBe('{"reason":"old"}');
  });
});

describe('body validators', () => {
  const checkHeartbeat = bodyValidator(EdgeHeartbeatSchema, 'heartbeat');
  const good = {
    id: 'e1',
    url: 'http://127.0.0.1:9000',
    region: 'r',
    capacityBytes: 1,
    usedBytes: 0,
    inFlight: 0,
    rps: 0,
    egressBps: 0,
    healthy: true,
    titles: [],
    ts: 1,
  };

  it('accepts a valid body as it is and refuses a broken one with E_BAD_REQUEST naming the fields', () => {
    expect(checkHeartbeat(good)).toBe(good);
    const err = (() => {
      try {
        checkHeartbeat({ ...good, rps: Number.NaN, healthy: 'yes' });
      } catch (e) {
        return e as OcdnError;
      }
    })();
    expect(err?.code).toBe('E_BAD_REQUEST');
    expect(err?.details).toEqual({ problems: ['rps: must be a finite number ≥ 0', 'healthy: must be true or false'] });
  });

  it('keeps the answer short however many entries are wrong', () => {
    const titles = Array.from({ length: HEARTBEAT_LIMITS.maxTitles }, () => '');
    const started = performance.now();
    expect(() => checkHeartbeat({ ...good, titles })).toThrow(
      /^invalid heartbeat: titles: at 0, every entry must be a title id of 1-128 characters of A-Z a-z 0-9 . _ -$/,
    );
    expect(performance.now() - started).toBeLessThan(2_000);
    expect(() => checkHeartbeat({ ...good, titles: Array.from({ length: HEARTBEAT_LIMITS.maxTitles + 1 }, () => 't') })).toThrow(
      /titles: must NOT have more than 4096 items/,
    );
  });

  it('bounds a QoE event batch (POST /v1/events) to 1..max events, each an object', () => {
    const check = bodyValidator(EventBatchSchema, 'event batch');
    const ev = { v: 1, type: 'session_start' };
    expect(check({ events: [ev] }).events).toHaveLength(1);
    expect(() => check({ events: [] })).toThrow(/events: must NOT have fewer than 1 items/);
    expect(() => check({ events: Array.from({ length: EVENT_BATCH_LIMITS.maxEvents + 1 }, () => ev) })).toThrow(/must NOT have more than 200 items/);
    expect(() => check({ events: [ev, 'x'] })).toThrow(/events: at 1, every event must be a JSON object/);
    expect(() => check([ev])).toThrow(/must be a JSON object \{"events": \[\.\.\.\]\}/);
  });

  it('compiles every contract (request and response schemas are valid JSON Schema)', () => {
    for (const [api, c] of Object.entries(CONTRACTS)) {
      if ('request' in c) expect(() => bodyValidator(c.request, api), api).not.toThrow();
      expect(() => bodyValidator(c.response, api), api).not.toThrow();
    }
  });
});

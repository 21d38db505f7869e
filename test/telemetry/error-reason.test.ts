import { describe, expect, it } from 'vitest';
import { eventSchema, validateEvent } from '../../telemetry/validate.ts';

const error = {
  v: 1,
  id: '7d1c6a34-5d43-4a55-9d36-1f2a3b4c5d6e',
  ts: 1_700_000_000_000,
  sessionId: 's',
  seq: 3,
  title: 'nope-9',
  edgeId: '',
  region: 'eu',
  isp: 'i',
  device: 'tv',
  abr: 'bba',
  type: 'error',
  code: 'E_NOT_FOUND',
  message: 'E_NOT_FOUND: steering refused (404): unknown title "nope-9"',
  fatal: true,
};

describe('the error event reason field', () => {
  it('is optional, a string of at most 512 characters', () => {
    expect(validateEvent(error).ok).toBe(true);
    expect(validateEvent({ ...error, reason: 'unknown title "nope-9"' }).ok).toBe(true);
    expect(validateEvent({ ...error, reason: 'x'.repeat(512) }).ok).toBe(true);
    const long = validateEvent({ ...error, reason: 'x'.repeat(513) });
    expect(long.ok).toBe(false);
    if (!long.ok) expect(long.reason).toMatch(/reason/);
    expect(validateEvent({ ...error, reason: 404 }).ok).toBe(false);
    expect(eventSchema('error')).toMatchObject({ properties: { reason: { type: 'string', maxLength: 512 } } });
    expect((eventSchema('error') as { required: string[] }).required).not.toContain('reason');
  });
});

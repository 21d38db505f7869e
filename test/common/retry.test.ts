import { describe, expect, it } from 'vitest';
import { Backoff, backoffDelay, retry, retryAfterMs, waitFor } from '../../common/retry.ts';

describe('backoffDelay', () => {
  it('grows exponentially up to the cap, with full jitter in [0, cap]', () => {
    const o = { baseMs: 100, maxMs: 1_000 };
    expect([1, 2, 3, 4, 5].map((n) => backoffDelay(n, o, () => 1))).toEqual([100, 200, 400, 800, 1_000]);
    expect(backoffDelay(3, o, () => 0)).toBe(0);
    expect(backoffDelay(3, o, () => 0.5)).toBe(200);
    expect(backoffDelay(3, { ...o, jitter: false })).toBe(400);
    expect(backoffDelay(7, { baseMs: 50, factor: 1, jitter: false })).toBe(50);
  });

  it('Backoff counts failures and starts over after reset', () => {
    const b = new Backoff({ baseMs: 10, jitter: false });
    expect([b.next(), b.next(), b.next()]).toEqual([10, 20, 40]);
    expect(b.failures).toBe(3);
    b.reset();
    expect(b.next()).toBe(10);
  });
});

describe('retry', () => {
  it('tries again until it succeeds, within maxAttempts', async () => {
    let calls = 0;
    const seen: number[] = [];
    const v = await retry(
      async ({ attempt }) => {
        calls++;
        seen.push(attempt);
        if (calls < 3) throw new Error(`fail ${calls}`);
        return 'ok';
      },
      { maxAttempts: 3, baseMs: 1 },
    );
    expect(v).toBe('ok');
    expect(seen).toEqual([1, 2, 3]);
  });

  it('gives up with the last error after maxAttempts', async () => {
    let calls = 0;
    await expect(
      retry(
        async () => {
          throw new Error(`fail ${++calls}`);
        },
        { maxAttempts: 3, baseMs: 1 },
      ),
    ).rejects.toThrow('fail 3');
    expect(calls).toBe(3);
  });

  it('does not retry what the predicate calls final', async () => {
    let calls = 0;
    await expect(
      retry(
        async () => {
          calls++;
          throw new Error('403');
        },
        { maxAttempts: 5, baseMs: 1, retryable: (e) => (e as Error).message !== '403' },
      ),
    ).rejects.toThrow('403');
    expect(calls).toBe(1);
  });

  it('keeps within its deadline, the last attempt at the deadline, and the attempt signal aborts there', async () => {
    const t0 = Date.now();
    let calls = 0;
    let lastSignal: AbortSignal | undefined;
    await expect(
      retry(
        async ({ signal }) => {
          calls++;
          lastSignal = signal;
          throw new Error('down');
        },
        { deadlineMs: 300, baseMs: 40, factor: 1, jitter: false },
      ),
    ).rejects.toThrow('down');
    const took = Date.now() - t0;
    expect(took).toBeGreaterThanOrEqual(290);
    expect(took).toBeLessThan(1_000);
    expect(calls).toBeGreaterThanOrEqual(5);
    await waitFor(() => lastSignal?.aborted, { timeoutMs: 500, what: 'deadline signal' });
  });

  it('waits what the other side asks (Retry-After), and gives up at once when that is past the deadline', async () => {
    const asked = Object.assign(new Error('429'), { retryAfterMs: 150 });
    let calls = 0;
    const t0 = Date.now();
    const v = await retry(
      async () => {
        if (++calls === 1) throw asked;
        return calls;
      },
      { baseMs: 1, retryAfterMs: (e) => (e as { retryAfterMs?: number }).retryAfterMs },
    );
    expect(v).toBe(2);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(145);

    const t1 = Date.now();
    calls = 0;
    await expect(
      retry(
        async () => {
          calls++;
          throw Object.assign(new Error('busy'), { retryAfterMs: 5_000 });
        },
        { deadlineMs: 1_000, retryAfterMs: (e) => (e as { retryAfterMs?: number }).retryAfterMs },
      ),
    ).rejects.toThrow('busy');
    expect(calls).toBe(1);
    expect(Date.now() - t1).toBeLessThan(500);
  });

  it('stops waiting when its signal aborts', async () => {
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error('stopped')), 50);
    await expect(
      retry(
        async () => {
          throw new Error('down');
        },
        { maxAttempts: 100, baseMs: 10_000, jitter: false, signal: ac.signal },
      ),
    ).rejects.toThrow('stopped');
  });
});

describe('waitFor', () => {
  it('resolves with the first truthy value', async () => {
    let n = 0;
    expect(await waitFor(() => (++n >= 3 ? n : undefined), { intervalMs: 5 })).toBe(3);
  });

  it('times out naming what it waited for and the last error', async () => {
    await expect(
      waitFor(
        () => {
          throw new Error('refused');
        },
        { timeoutMs: 100, intervalMs: 10, what: 'the thing' },
      ),
    ).rejects.toThrow(/timed out after 100 ms waiting for the thing \(last error: refused\)/);
  });

  it('ends at once on a fatal error, and lets the caller choose the timeout error', async () => {
    let calls = 0;
    await expect(
      waitFor(
        () => {
          calls++;
          throw new RangeError('process exited');
        },
        { timeoutMs: 5_000, intervalMs: 10, fatal: (e) => e instanceof RangeError },
      ),
    ).rejects.toThrow('process exited');
    expect(calls).toBe(1);
    await expect(waitFor(() => false, { timeoutMs: 50, intervalMs: 10, timeoutError: (m) => new TypeError(`custom: ${m}`) })).rejects.toThrow(TypeError);
  });
});

describe('retryAfterMs', () => {
  it('reads seconds and HTTP dates, caps at an hour, ignores garbage', () => {
    const now = Date.parse('2026-01-01T00:00:00Z');
    expect(retryAfterMs('5')).toBe(5_000);
    expect(retryAfterMs(['2', '9'])).toBe(2_000);
    expect(retryAfterMs('Thu, 01 Jan 2026 00:00:30 GMT', now)).toBe(30_000);
    expect(retryAfterMs('Wed, 31 Dec 2025 00:00:00 GMT', now)).toBe(0);
    expect(retryAfterMs('99999999')).toBe(3_600_000);
    for (const bad of [undefined, null, '', 'soon', '-3']) expect(retryAfterMs(bad)).toBeUndefined();
  });
});

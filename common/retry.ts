/**
 * The one retry and the one poll of the product. Backoff is exponential with full jitter
 * (a random delay in [0, min(maxMs, baseMs · factor^(n−1))]), which spreads the retries of many
 * clients hitting one recovering server instead of synchronising them. The option names follow
 * p-retry's ideas (attempts, deadline, signal, a predicate), so swapping in a library stays a
 * change of this file only.
 */

export interface BackoffOptions {
  /** Cap of the first delay, ms (default 100). */
  baseMs?: number;
  /** Largest delay, ms (default 10 s). */
  maxMs?: number;
  /** Growth per attempt (default 2; 1 = a fixed interval). */
  factor?: number;
  /** Full jitter (default true); false waits the cap exactly (polls of a local thing). */
  jitter?: boolean;
}

/** Delay before retry number `n` (1 = the first retry). */
export function backoffDelay(n: number, o: BackoffOptions = {}, random = Math.random): number {
  const cap = Math.min(o.maxMs ?? 10_000, (o.baseMs ?? 100) * (o.factor ?? 2) ** Math.max(0, n - 1));
  return o.jitter === false ? cap : random() * cap;
}

/** Backoff for event-driven callers that schedule their own next try (no loop to hand over). */
export class Backoff {
  private n = 0;
  constructor(private readonly o: BackoffOptions = {}) {}
  /** The next delay; each call counts one more failure. */
  next(): number {
    return backoffDelay(++this.n, this.o);
  }
  /** After a success: the next failure starts from the first delay again. */
  reset(): void {
    this.n = 0;
  }
  get failures(): number {
    return this.n;
  }
}

export interface RetryOptions extends BackoffOptions {
  /** Attempts in all, the first included (default 3; Infinity with a deadline). */
  maxAttempts?: number;
  /** Budget from the first attempt, ms: no wait goes past it; the attempt's signal aborts at it. */
  deadlineMs?: number;
  /** Whether a failure may get better by trying again (default: every failure). */
  retryable?: (err: unknown) => boolean;
  /** A wait the other side asked for (Retry-After), ms: waited at least, and given up on when past the deadline. */
  retryAfterMs?: (err: unknown) => number | undefined;
  signal?: AbortSignal;
  onRetry?: (info: { attempt: number; err: unknown; delayMs: number }) => void;
}

export interface Attempt {
  /** 1 for the first attempt. */
  attempt: number;
  /** Aborted by the caller's signal or at the deadline. */
  signal: AbortSignal;
  /** Ms left before the deadline (Infinity without one). */
  remainingMs: number;
}

/** Runs `fn` until it resolves; gives up with its last error (or the abort reason). */
export async function retry<T>(fn: (a: Attempt) => Promise<T>, o: RetryOptions = {}): Promise<T> {
  const maxAttempts = o.maxAttempts ?? (o.deadlineMs === undefined ? 3 : Number.POSITIVE_INFINITY);
  const endAt = o.deadlineMs === undefined ? Number.POSITIVE_INFINITY : Date.now() + o.deadlineMs;
  const signals = [o.signal, o.deadlineMs === undefined ? undefined : AbortSignal.timeout(Math.max(0, o.deadlineMs))].filter((s): s is AbortSignal => !!s);
  const signal = signals.length === 1 ? signals[0]! : signals.length > 1 ? AbortSignal.any(signals) : new AbortController().signal;
  for (let attempt = 1; ; attempt++) {
    if (o.signal?.aborted) throw o.signal.reason;
    try {
      return await fn({ attempt, signal, remainingMs: endAt - Date.now() });
    } catch (err) {
      if (o.signal?.aborted) throw o.signal.reason;
      if (attempt >= maxAttempts || !(o.retryable?.(err) ?? true)) throw err;
      const remaining = endAt - Date.now();
      const asked = o.retryAfterMs?.(err);
      let delayMs = backoffDelay(attempt, o);
      if (asked !== undefined) {
        if (asked > remaining) throw err;
        delayMs = Math.max(asked, delayMs);
      }
      if (remaining <= 0) throw err;
      // The last wait ends at the deadline, so one more attempt gets made there.
      delayMs = Math.min(delayMs, remaining);
      o.onRetry?.({ attempt, err, delayMs });
      await sleep(delayMs, o.signal);
    }
  }
}

/**
 * A Retry-After header (delta-seconds or an HTTP date) in ms; undefined when absent or
 * unreadable. Capped at an hour: the header comes from the network.
 */
export function retryAfterMs(value: string | string[] | null | undefined, now = Date.now()): number | undefined {
  const v = (Array.isArray(value) ? value[0] : value)?.trim();
  if (!v) return undefined;
  // An HTTP date starts with the day's name; Date.parse alone would take "-3" for a year.
  const ms = /^\d{1,10}$/.test(v) ? Number(v) * 1000 : /^[A-Za-z]{3}/.test(v) ? Date.parse(v) - now : Number.NaN;
  return Number.isNaN(ms) ? undefined : Math.min(3_600_000, Math.max(0, ms));
}

/** setTimeout as a promise; rejects with the signal's reason when it aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal!.reason);
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

const NOT_YET = new Error('condition not met yet');

export interface WaitOptions {
  timeoutMs?: number;
  intervalMs?: number;
  what?: string;
  /** Errors from `check` that end the wait at once (default: none; every error means "not yet"). */
  fatal?: (err: unknown) => boolean;
  /** The error to throw on timeout (default: "timed out after … waiting for <what>"). */
  timeoutError?: (message: string, lastErr: unknown) => Error;
  signal?: AbortSignal;
}

/** Polls `check` at a fixed interval until it returns a truthy value or the deadline passes. */
export async function waitFor<T>(check: () => Promise<T | undefined | null | false> | T | undefined | null | false, opts: WaitOptions = {}): Promise<T> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  let lastErr: unknown;
  try {
    return await retry(
      async () => {
        const v = await check();
        if (!v) throw NOT_YET;
        return v;
      },
      {
        deadlineMs: timeoutMs,
        baseMs: opts.intervalMs ?? 50,
        factor: 1,
        jitter: false,
        signal: opts.signal,
        retryable: (err) => {
          if (err !== NOT_YET) lastErr = err;
          return err === NOT_YET || !opts.fatal?.(err);
        },
      },
    );
  } catch (err) {
    if (opts.signal?.aborted || (err !== NOT_YET && opts.fatal?.(err))) throw err;
    const why = lastErr instanceof Error ? ` (last error: ${lastErr.message})` : '';
    const message = `timed out after ${timeoutMs} ms waiting for ${opts.what ?? 'condition'}${why}`;
    throw opts.timeoutError ? opts.timeoutError(message, lastErr) : new Error(message);
  }
}

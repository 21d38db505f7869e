/**
 * Session time. The session code only ever asks this interface what time it is and to wait,
 * so the same code runs on real timers (scaled by --speed) and on the virtual event clock.
 */
export interface Clock {
  /** Session-time milliseconds since the clock started. */
  now(): number;
  /** Wall-clock ms at now() = 0. */
  readonly epochMs: number;
  /**
   * Event time (ms since epoch) of session time `atMs`. Real mode maps back to the wall clock
   * (session time runs --speed× faster), so telemetry's event-time windows and watermarks see
   * when things really happened; virtual mode stamps its own simulated timeline.
   */
  eventTime(atMs: number): number;
  /** Calls fn once at session time `atMs` (at once-ish if already past); returns a cancel. */
  timer(atMs: number, fn: () => void): () => void;
  /** Resolves after `ms` of session time; rejects with AbortedError when `signal` aborts. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export class AbortedError extends Error {
  constructor(readonly reason: unknown = 'aborted') {
    super(typeof reason === 'string' ? reason : 'aborted');
    this.name = 'AbortedError';
  }
}

export function isAborted(err: unknown): err is AbortedError {
  return err instanceof AbortedError;
}

/** Sleep built on any clock's timer, with abort. */
export function sleepOn(clock: Pick<Clock, 'now' | 'timer'>, ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.reject(new AbortedError(signal.reason));
  return new Promise<void>((resolve, reject) => {
    const onAbort = () => {
      cancel();
      reject(new AbortedError(signal!.reason));
    };
    const cancel = clock.timer(clock.now() + Math.max(0, ms), () => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    });
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Real timers. With speed s, one real second is s seconds of session time: playback, trace
 * and throttle all run s× faster, so ABR sees the same bandwidth-to-bitrate ratios and a
 * 10-minute experiment finishes in 10/s minutes.
 */
export class RealClock implements Clock {
  readonly epochMs: number;
  private readonly origin: number;

  constructor(readonly speed = 1) {
    if (!(speed > 0)) throw new RangeError(`speed must be > 0, got ${speed}`);
    this.origin = performance.now();
    this.epochMs = Date.now();
  }

  now(): number {
    return (performance.now() - this.origin) * this.speed;
  }

  eventTime(atMs: number): number {
    return this.epochMs + atMs / this.speed;
  }

  timer(atMs: number, fn: () => void): () => void {
    let h: NodeJS.Timeout;
    // Node truncates fractional delays and may fire up to 1 ms early (×speed in session
    // time); a timer that fires before its time is re-armed, so "at" is never earlier than asked.
    const arm = () => {
      const wait = (atMs - this.now()) / this.speed;
      if (wait > 0) h = setTimeout(arm, Math.ceil(wait));
      else fn();
    };
    h = setTimeout(arm, Math.max(0, Math.ceil((atMs - this.now()) / this.speed)));
    return () => clearTimeout(h);
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return sleepOn(this, ms, signal);
  }
}

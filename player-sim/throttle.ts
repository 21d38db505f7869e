import { AbortedError, type Clock } from './clock.ts';
import { bytesBetween, transferEnd, type Trace } from './network.ts';

/**
 * Token bucket on the bytes a session reads from its sockets. Tokens accrue at the trace's
 * rate (session time) up to a depth of `burstMs` worth of the current rate; a read of n bytes
 * waits until n tokens exist. Because the reader stops pulling while it waits, undici stops
 * reading the socket and TCP flow control pushes back on the edge: the limit is on the wire,
 * not just on our bookkeeping.
 *
 * The refill clock advances to the time a wait was due, not to when the timer actually fired,
 * so timer lateness on a busy machine becomes a few tokens of credit (bounded by the depth)
 * instead of accumulating as lost link time.
 */
export class TokenBucket {
  private tokens = 0;
  private at: number;

  constructor(
    private readonly clock: Clock,
    private readonly trace: Trace,
    /** Session time at which the trace starts (its t = 0). */
    private readonly traceOrigin: number,
    private readonly burstMs = 20,
    private readonly minDepthBytes = 1500,
  ) {
    this.at = clock.now();
  }

  private depth(now: number): number {
    return Math.max(this.minDepthBytes, (this.trace.rateAt(now - this.traceOrigin) * this.burstMs) / 8000);
  }

  private refill(now: number): void {
    if (now <= this.at) return;
    const added = bytesBetween(this.trace, this.at - this.traceOrigin, now - this.traceOrigin);
    this.tokens = Math.min(this.depth(now), this.tokens + added);
    this.at = now;
  }

  /** Waits until `bytes` may be delivered, then takes them. */
  async take(bytes: number, signal?: AbortSignal): Promise<void> {
    const now = this.clock.now();
    this.refill(now);
    if (this.tokens >= bytes) {
      this.tokens -= bytes;
      return;
    }
    const need = bytes - this.tokens;
    const due = transferEnd(this.trace, Math.max(now, this.at) - this.traceOrigin, need) + this.traceOrigin;
    this.tokens = 0;
    this.at = due;
    // No abort listener per wait (thousands of waits a second across sessions): an abort is
    // noticed when the wait ends, at most one piece (~100 ms of link time) late.
    await this.clock.sleep(due - now);
    if (signal?.aborted) throw new AbortedError(signal.reason);
  }

  /** Size of the next read to pace: ~100 ms of the current rate, so progress checks stay frequent. */
  pieceBytes(): number {
    const rate = this.trace.rateAt(this.clock.now() - this.traceOrigin);
    return Math.max(4096, Math.floor((rate * 0.1) / 8));
  }
}

import { request } from 'undici';
import type { EdgeHeartbeat } from '../common/contracts.ts';
import { errorMessage } from '../common/http.ts';
import type { Logger } from '../common/log.ts';
import { retry, retryAfterMs } from '../common/retry.ts';

/**
 * Pushes an EdgeHeartbeat (the contract steering checks it against) to steering every interval, to every steering replica given (each
 * keeps its own registry, so each must hear from every edge). Steering being slow or down must
 * never touch serving: one beat at a time (a slow steering skips beats rather than piling them
 * up), a timeout shorter than the interval, failures logged once per outage and replica.
 */
export class Heartbeat {
  private timer: NodeJS.Timeout | undefined;
  private sending: Promise<void> | undefined;
  private readonly failing = new Set<string>();
  sent = 0;

  constructor(
    private readonly opts: {
      /** Steering base URLs (no trailing slash): every replica gets each beat. */
      steeringUrls: readonly string[];
      intervalMs: number;
      build: () => EdgeHeartbeat;
      log: Logger;
    },
  ) {}

  start(): void {
    if (this.timer) return;
    this.beat();
    this.timer = setInterval(() => this.beat(), this.opts.intervalMs);
    this.timer.unref();
  }

  /** Stops beating; with `final`, sends one last beat (healthy: false) so steering drops this edge at once. */
  async stop(final?: EdgeHeartbeat): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.sending;
    if (final) await this.send(final, 1_000);
  }

  private beat(): void {
    if (this.sending) return;
    this.sending = this.send(this.opts.build(), Math.max(200, Math.min(this.opts.intervalMs, 2_000))).finally(() => {
      this.sending = undefined;
    });
  }

  /** The same beat (built once: its rates cover the interval) to every replica. */
  private async send(body: EdgeHeartbeat, timeoutMs: number): Promise<void> {
    const text = JSON.stringify(body);
    await Promise.all(this.opts.steeringUrls.map((u) => this.sendTo(u, text, timeoutMs)));
  }

  private async sendTo(steeringUrl: string, body: string, timeoutMs: number): Promise<void> {
    try {
      // Within the beat's own budget, so retries never make beats pile up; a 4xx is this edge's
      // fault and would only be refused again.
      await retry(
        async ({ signal, remainingMs }) => {
          const res = await request(`${steeringUrl}/v1/edges/heartbeat`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body,
            headersTimeout: Math.max(1, remainingMs),
            bodyTimeout: Math.max(1, remainingMs),
            signal,
          });
          if (res.statusCode < 300) return void (await res.body.dump());
          throw new BeatRefused(res.statusCode, retryAfterMs(res.headers['retry-after']), errorMessage(await res.body.text()));
        },
        {
          maxAttempts: 3,
          deadlineMs: timeoutMs,
          baseMs: 50,
          maxMs: 500,
          retryable: (err) => !(err instanceof BeatRefused) || err.status >= 500 || err.status === 429,
          retryAfterMs: (err) => (err instanceof BeatRefused ? err.retryAfterMs : undefined),
        },
      );
      this.sent++;
      if (this.failing.delete(steeringUrl)) this.opts.log.info({ steering: steeringUrl }, 'heartbeats reach steering again');
    } catch (err) {
      if (!this.failing.has(steeringUrl)) {
        this.opts.log.warn(
          { steering: steeringUrl, err: err instanceof Error ? err.message : String(err) },
          'heartbeat failed (serving continues; logged once until it recovers)',
        );
      }
      this.failing.add(steeringUrl);
    }
  }
}

class BeatRefused extends Error {
  constructor(
    readonly status: number,
    readonly retryAfterMs: number | undefined,
    why: string,
  ) {
    super(`steering answered ${status}: ${why}`);
  }
}

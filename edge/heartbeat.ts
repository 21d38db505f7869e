import { request } from 'undici';
import { type EdgeHeartbeat, HEARTBEAT_LIMITS } from '../common/contracts.ts';
import { deriveEdgeKey, signHeartbeat } from '../common/edge-key.ts';
import { errorMessage } from '../common/http.ts';
import type { Logger } from '../common/log.ts';
import { retry, retryAfterMs } from '../common/retry.ts';

/**
 * Pushes an EdgeHeartbeat (the contract steering checks it against) to steering every interval, to every steering replica given (each
 * keeps its own registry, so each must hear from every edge). Steering being slow or down must
 * never touch serving: one beat at a time (a slow steering skips beats rather than piling them
 * up), a timeout shorter than the interval, failures logged once per outage and replica.
 *
 * Each attempt is signed afresh (timestamp, nonce) with this edge's key, derived from the
 * cluster's edge key (common/edge-key.ts): a retry after a lost answer is a new beat, not a
 * replay. The inventory is cut to what steering accepts (HEARTBEAT_LIMITS): an edge holding
 * more titles lists some of them rather than being refused.
 */
export class Heartbeat {
  private timer: NodeJS.Timeout | undefined;
  private sending: Promise<void> | undefined;
  private readonly failing = new Set<string>();
  private key: { id: string; key: Buffer } | undefined;
  sent = 0;

  constructor(
    private readonly opts: {
      /** Steering base URLs (no trailing slash): every replica gets each beat. */
      steeringUrls: readonly string[];
      intervalMs: number;
      build: () => EdgeHeartbeat;
      log: Logger;
      /** The cluster's edge key; without it beats go unsigned (for a steering with admission off). */
      edgeKey?: string | undefined;
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
    const text = boundedBody(body);
    await Promise.all(this.opts.steeringUrls.map((u) => this.sendTo(u, body.id, text, timeoutMs)));
  }

  private signature(id: string, body: string): Record<string, string> {
    if (this.opts.edgeKey === undefined) return {};
    if (this.key?.id !== id) this.key = { id, key: deriveEdgeKey(this.opts.edgeKey, id) };
    return signHeartbeat(this.key.key, id, body);
  }

  private async sendTo(steeringUrl: string, id: string, body: string, timeoutMs: number): Promise<void> {
    try {
      // Within the beat's own budget, so retries never make beats pile up; a 4xx is this edge's
      // fault and would only be refused again.
      await retry(
        async ({ signal, remainingMs }) => {
          const res = await request(`${steeringUrl}/v1/edges/heartbeat`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', ...this.signature(id, body) },
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

/**
 * The beat as JSON within steering's bounds: at most maxTitles valid title ids, titles dropped
 * from the end until the body fits maxBodyBytes.
 */
export function boundedBody(hb: EdgeHeartbeat): string {
  const pattern = /^[A-Za-z0-9._-]{1,128}$/;
  let titles = hb.titles.filter((t) => pattern.test(t)).slice(0, HEARTBEAT_LIMITS.maxTitles);
  let text = JSON.stringify({ ...hb, titles });
  while (Buffer.byteLength(text) > HEARTBEAT_LIMITS.maxBodyBytes && titles.length > 0) {
    // Cut by the share that is over, so a huge inventory takes a few passes, not thousands.
    const over = Buffer.byteLength(text) / HEARTBEAT_LIMITS.maxBodyBytes;
    titles = titles.slice(0, Math.max(0, Math.min(titles.length - 1, Math.floor(titles.length / over) - 1)));
    text = JSON.stringify({ ...hb, titles });
  }
  return text;
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

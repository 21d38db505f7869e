import { Agent, request, type Dispatcher } from 'undici';
import { AbortedError, type Clock } from './clock.ts';
import type { TokenBucket } from './throttle.ts';
import { TransportError, type FetchRequest, type FetchResult, type Transport } from './transport.ts';

/**
 * One undici Agent shared by every session in the process (a pool per edge origin). Its own
 * timeouts are off: timeouts are enforced in session time by the transport, because the token
 * bucket legitimately leaves a socket unread for seconds on a slow trace.
 */
export function createPlayerAgent(opts: { connectTimeoutMs?: number } = {}): Agent {
  return new Agent({
    keepAliveTimeout: 30_000,
    keepAliveMaxTimeout: 60_000,
    headersTimeout: 0,
    bodyTimeout: 0,
    connect: { timeout: opts.connectTimeoutMs ?? 5_000 },
  });
}

function classify(err: unknown): TransportError['kind'] {
  const code = (err as { code?: string })?.code ?? '';
  if (code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT' || code === 'ETIMEDOUT') return 'timeout';
  if (code === 'ECONNRESET' || code === 'EPIPE' || code === 'UND_ERR_SOCKET' || code === 'UND_ERR_CLOSED') return 'reset';
  return 'connect';
}

export interface HttpTransportOptions {
  agent: Dispatcher;
  clock: Clock;
  /** Access-link limit on body reads; none = as fast as the socket goes. */
  bucket?: TokenBucket;
  /** Added before every request (propagation both ways), session ms. */
  rttMs: number;
  /** No body bytes from the socket for this long (session ms) → the transfer failed. */
  idleTimeoutMs?: number;
}

/** Real sockets: undici, the RTT as a delay before each request, the token bucket on reads. */
export class HttpTransport implements Transport {
  private readonly idleTimeoutMs: number;

  constructor(private readonly o: HttpTransportOptions) {
    this.idleTimeoutMs = o.idleTimeoutMs ?? 10_000;
  }

  async fetch(req: FetchRequest): Promise<FetchResult> {
    const { clock, bucket } = this.o;
    const t0 = clock.now();
    if (this.o.rttMs > 0) await clock.sleep(this.o.rttMs, req.signal);
    const ac = new AbortController();
    const onAbort = () => ac.abort(req.signal!.reason);
    req.signal?.addEventListener('abort', onAbort, { once: true });
    let timedOut = false;
    const fail = (err: unknown, what: string): Error => {
      if (req.signal?.aborted) return new AbortedError(req.signal.reason);
      if (timedOut) return new TransportError('timeout', `${what} from ${hostOf(req.url)} timed out`);
      return new TransportError(classify(err), `${what} ${hostOf(req.url)}: ${(err as Error)?.message ?? String(err)}`);
    };
    try {
      let res: Dispatcher.ResponseData;
      const cancelHeaders = clock.timer(t0 + req.timeoutMs, () => {
        timedOut = true;
        ac.abort();
      });
      try {
        res = await request(req.url, { dispatcher: this.o.agent, method: 'GET', headers: req.headers, signal: ac.signal });
      } catch (err) {
        throw fail(err, 'request to');
      } finally {
        cancelHeaders();
      }
      const ttfbMs = clock.now() - t0;
      const header = (name: string) => {
        const v = res.headers[name.toLowerCase()];
        return Array.isArray(v) ? v[0] : v;
      };
      const lengthHeader = Number(header('content-length'));
      const totalBytes = Number.isFinite(lengthHeader) && lengthHeader >= 0 ? lengthHeader : undefined;
      const body = res.body;
      const chunks: Buffer[] = [];
      let bytes = 0;
      let abandoned = false;
      const keepText = req.wantText || res.statusCode >= 400;
      const it = body[Symbol.asyncIterator]();
      // One watchdog per transfer, not a timer per chunk: it re-arms itself from the time the
      // reader last asked the socket for data and only fires after idleTimeoutMs of silence.
      let waitingSince = clock.now();
      let waiting = false;
      let idle = false;
      let cancelIdle = (): void => {};
      const watch = (at: number) => {
        cancelIdle = clock.timer(at, () => {
          if (waiting && clock.now() - waitingSince >= this.idleTimeoutMs) {
            idle = true;
            timedOut = true;
            ac.abort();
          } else watch((waiting ? waitingSince : clock.now()) + this.idleTimeoutMs);
        });
      };
      watch(waitingSince + this.idleTimeoutMs);
      try {
        for (;;) {
          let step: IteratorResult<Buffer>;
          waiting = true;
          waitingSince = clock.now();
          try {
            step = (await it.next()) as IteratorResult<Buffer>;
          } catch (err) {
            throw fail(err, idle ? 'body' : 'body from');
          } finally {
            waiting = false;
          }
          if (step.done) break;
          const chunk = step.value;
          if (keepText) chunks.push(chunk);
          // Deliver the chunk through the bucket in ~100 ms pieces so progress (and the
          // abandonment check) is seen at link pace, not in socket-sized lumps.
          let off = 0;
          while (off < chunk.length) {
            const n = bucket ? Math.min(chunk.length - off, bucket.pieceBytes()) : chunk.length - off;
            if (bucket) await bucket.take(n, req.signal);
            off += n;
            bytes += n;
            if (req.onProgress?.({ elapsedMs: clock.now() - t0, ttfbMs, bytes, totalBytes })) {
              abandoned = true;
              break;
            }
          }
          if (abandoned) break;
        }
      } finally {
        cancelIdle();
        if (abandoned || req.signal?.aborted || timedOut) body.destroy();
      }
      return {
        status: res.statusCode,
        header,
        bytes,
        text: keepText ? Buffer.concat(chunks).toString('utf8') : undefined,
        ttfbMs,
        totalMs: clock.now() - t0,
        abandoned,
      };
    } catch (err) {
      if (err instanceof AbortedError && !req.signal?.aborted) throw fail(err, 'body');
      throw err;
    } finally {
      req.signal?.removeEventListener('abort', onAbort);
    }
  }
}

function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return url;
  }
}

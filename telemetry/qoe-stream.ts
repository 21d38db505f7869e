/**
 * GET /v1/qoe/stream: the /v1/qoe answer pushed as Server-Sent Events (contracts: QOE_STREAM),
 * for the web console's live charts. Every message is a whole snapshot, so a slow reader
 * simply misses some (nothing queues behind it), and one timer serves every stream: streams
 * asking the same query share one computation per tick.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Counter, Gauge, type Registry } from 'prom-client';
import { QOE_STREAM, type QoeResponse } from '../common/contracts.ts';
import { describeError, ErrorCodes, OcdnError } from '../common/errors.ts';
import { errorBody } from '../common/http.ts';
import type { Logger } from '../common/log.ts';

export interface QoeStreamOptions {
  /** The /v1/qoe computation; throws E_BAD_REQUEST for a bad query. */
  compute: (params: URLSearchParams) => QoeResponse;
  maxStreams?: number;
  intervalMs?: number;
  heartbeatMs?: number;
  /** A reader that has not taken what it was sent for this long is cut off. */
  stuckMs?: number;
  registry?: Registry;
  log: Logger;
}

interface Stream {
  res: ServerResponse;
  params: URLSearchParams;
  key: string;
  lastBeat: number;
  /** Since when the socket has refused more (undefined while it drains). */
  stuckSince: number | undefined;
}

export class QoeStreams {
  private readonly streams = new Set<Stream>();
  private readonly opts: Required<Omit<QoeStreamOptions, 'registry'>>;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly refused: Counter;

  constructor(opts: QoeStreamOptions) {
    this.opts = {
      compute: opts.compute,
      maxStreams: opts.maxStreams ?? QOE_STREAM.maxStreams,
      intervalMs: opts.intervalMs ?? QOE_STREAM.intervalMs,
      heartbeatMs: opts.heartbeatMs ?? QOE_STREAM.heartbeatMs,
      stuckMs: opts.stuckMs ?? 30_000,
      log: opts.log,
    };
    const registers = opts.registry ? [opts.registry] : [];
    const self = this;
    new Gauge({
      name: 'ocdn_qoe_streams_open',
      help: 'Open GET /v1/qoe/stream connections',
      registers,
      collect() {
        this.set(self.streams.size);
      },
    });
    this.refused = new Counter({
      name: 'ocdn_qoe_streams_refused_total',
      help: 'GET /v1/qoe/stream requests refused because maxStreams were open',
      registers,
    });
  }

  get size(): number {
    return this.streams.size;
  }

  /** Answers one GET /v1/qoe/stream: an error body before any event, or the stream. */
  open(req: IncomingMessage, res: ServerResponse, params: URLSearchParams): void {
    if (this.closed) throw new OcdnError(ErrorCodes.NOT_READY, 'the aggregator is stopping');
    if (this.streams.size >= this.opts.maxStreams) {
      this.refused.inc();
      throw new OcdnError(ErrorCodes.BUSY, `${this.opts.maxStreams} QoE streams are open, the most this aggregator serves; poll /v1/qoe or retry later`);
    }
    // Computed before the head so a bad query is a 400 with the error body, not a broken stream.
    const first = this.opts.compute(params);
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      // Proxies (nginx) would otherwise hold the events back.
      'x-accel-buffering': 'no',
      // One stream per connection: ending it on shutdown closes the socket too.
      connection: 'close',
    });
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    const key = [...params.entries()]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([k, v]) => `${k}=${v}`)
      .join('&');
    const s: Stream = { res, params, key, lastBeat: Date.now(), stuckSince: undefined };
    this.streams.add(s);
    res.once('close', () => {
      this.streams.delete(s);
      if (this.streams.size === 0) this.stopTimer();
    });
    res.write(`retry: ${this.opts.intervalMs * 2}\n\n`);
    this.send(s, message(first), Date.now());
    this.timer ??= setInterval(() => this.tick(), this.opts.intervalMs);
    this.timer.unref();
  }

  /** Ends every stream (server shutdown); later requests get 503. */
  close(): void {
    this.closed = true;
    this.stopTimer();
    for (const s of this.streams) s.res.end();
    this.streams.clear();
  }

  private stopTimer(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private send(s: Stream, text: string, now: number): void {
    if (s.res.writableNeedDrain) {
      s.stuckSince ??= now;
      if (now - s.stuckSince > this.opts.stuckMs) {
        this.opts.log.debug({ remote: s.res.socket?.remoteAddress }, 'QoE stream reader stuck; closing it');
        s.res.destroy();
      }
      return;
    }
    s.stuckSince = undefined;
    s.res.write(text);
  }

  private tick(): void {
    const now = Date.now();
    const byKey = new Map<string, string>();
    for (const s of this.streams) {
      let text = byKey.get(s.key);
      if (text === undefined) {
        try {
          text = message(this.opts.compute(s.params));
        } catch (err) {
          this.opts.log.warn({ err: describeError(err) }, 'QoE stream computation failed');
          text = `event: error\ndata: ${JSON.stringify(errorBody(err))}\n\n`;
        }
        byKey.set(s.key, text);
      }
      this.send(s, text, now);
    }
    // A comment line on its own clock, whatever the snapshots do: proxies and EventSource see a live connection.
    for (const s of this.streams) {
      if (now - s.lastBeat < this.opts.heartbeatMs) continue;
      s.lastBeat = now;
      this.send(s, ': keep-alive\n\n', now);
    }
  }
}

function message(body: QoeResponse): string {
  return `event: ${QOE_STREAM.event}\ndata: ${JSON.stringify(body)}\n\n`;
}

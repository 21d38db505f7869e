/**
 * Server-Sent Events to the console's pages. Every message is a whole snapshot, so a page that
 * cannot keep up misses some (nothing queues behind it) and one stuck past `stuckMs` is cut off,
 * as the aggregator's own stream does (telemetry/qoe-stream.ts).
 */
import type { ServerResponse } from 'node:http';
import { ErrorCodes, OcdnError } from '../common/errors.ts';

export interface SseClient {
  res: ServerResponse;
  stuckSince: number | undefined;
}

export class SseGroup {
  private readonly clients = new Set<SseClient>();
  private last: string | undefined;
  private beat: NodeJS.Timeout | undefined;

  constructor(
    private readonly o: {
      /** Called when the first client comes and after the last one leaves. */
      onActive?: (active: boolean) => void;
      heartbeatMs?: number;
      stuckMs?: number;
      retryMs?: number;
    } = {},
  ) {}

  get size(): number {
    return this.clients.size;
  }

  /** Starts the event stream on `res`; the last message sent so far goes out at once. */
  add(res: ServerResponse): void {
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      'x-accel-buffering': 'no',
      connection: 'close',
    });
    const c: SseClient = { res, stuckSince: undefined };
    this.clients.add(c);
    res.once('close', () => {
      this.clients.delete(c);
      if (this.clients.size === 0) {
        if (this.beat) clearInterval(this.beat);
        this.beat = undefined;
        this.o.onActive?.(false);
      }
    });
    res.write(`retry: ${this.o.retryMs ?? 2_000}\n\n`);
    if (this.last !== undefined) res.write(this.last);
    if (this.clients.size === 1) {
      this.beat = setInterval(() => this.write(': keep-alive\n\n'), this.o.heartbeatMs ?? 15_000);
      this.beat.unref();
      this.o.onActive?.(true);
    }
  }

  /** One SSE message to every client; `remember` keeps it for clients that come later. */
  send(event: string, data: unknown, remember = true): void {
    const text = `event: ${event}\ndata: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`;
    if (remember) this.last = text;
    this.write(text);
  }

  private write(text: string): void {
    const now = Date.now();
    for (const c of this.clients) {
      if (c.res.writableNeedDrain) {
        c.stuckSince ??= now;
        if (now - c.stuckSince > (this.o.stuckMs ?? 30_000)) c.res.destroy();
        continue;
      }
      c.stuckSince = undefined;
      c.res.write(text);
    }
  }

  close(): void {
    if (this.beat) clearInterval(this.beat);
    this.beat = undefined;
    for (const c of this.clients) c.res.end();
    this.clients.clear();
  }
}

/** Refuses a new stream past `max` open ones in all: a bound on what many tabs can hold open. */
export function checkStreamCap(open: number, max: number): void {
  if (open >= max) throw new OcdnError(ErrorCodes.BUSY, `${max} console streams are open, the most this console serves; close a tab or retry later`);
}

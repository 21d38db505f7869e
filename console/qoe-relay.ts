/**
 * GET /api/qoe/stream: the aggregator's GET /v1/qoe/stream, same-origin for the page (no CORS)
 * and shared: one upstream stream per distinct query, whatever the number of pages watching, so
 * tabs cannot use up the aggregator's stream cap. The upstream is opened by the first page,
 * re-opened with backoff while any page watches (an aggregator restart is a gap in the chart,
 * with an `event: error` saying why), and closed when the last page leaves.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ErrorCodes, OcdnError } from '../common/errors.ts';
import { errorBody, errorMessage } from '../common/http.ts';
import type { Logger } from '../common/log.ts';
import { Backoff, sleep } from '../common/retry.ts';
import { SseGroup } from './sse.ts';

/** The query parameters /v1/qoe/stream reads (telemetry/view.ts parseQoeQuery); anything else is not passed on. */
const PARAMS = ['by', 'window', 'last', 'from', 'to', 'value', 'final'] as const;

/** The upstream's own refusal of a query (4xx), passed to the page as it came. */
interface Refusal {
  status: number;
  body: string;
}

export function relayQuery(params: URLSearchParams): string {
  const q = new URLSearchParams();
  for (const k of PARAMS) {
    const v = params.get(k);
    if (v !== null) q.set(k, v.slice(0, 64));
  }
  return q.toString();
}

class Relay {
  readonly group: SseGroup;
  readonly ready: Promise<Refusal | undefined>;
  private resolveReady!: (r: Refusal | undefined) => void;
  private readonly abort = new AbortController();
  private closed = false;

  constructor(
    private readonly url: string,
    private readonly log: Logger,
    onIdle: () => void,
  ) {
    this.group = new SseGroup({ onActive: (on) => !on && onIdle() });
    this.ready = new Promise((r) => (this.resolveReady = r));
    void this.run();
  }

  private async run(): Promise<void> {
    const backoff = new Backoff({ baseMs: 500, maxMs: 10_000, factor: 2, jitter: true });
    let first = true;
    while (!this.closed) {
      try {
        const res = await fetch(this.url, { signal: this.abort.signal, headers: { accept: 'text/event-stream' } });
        if (res.status !== 200) {
          const body = await res.text();
          if (first && res.status >= 400 && res.status < 500) return this.resolveReady({ status: res.status, body });
          throw new Error(`answered ${res.status}: ${errorMessage(body)}`);
        }
        first = false;
        this.resolveReady(undefined);
        backoff.reset();
        await this.pump(res);
      } catch (err) {
        if (this.closed) return;
        first = false;
        const why = ((err as Error).cause as { code?: string } | undefined)?.code ?? (err as Error).message;
        this.log.debug({ url: this.url, err: why }, 'QoE upstream stream failed; reconnecting');
        this.group.send('error', errorBody(new OcdnError(ErrorCodes.ORIGIN_UNAVAILABLE, `the aggregator's QoE stream (${this.url}): ${why}; reconnecting`)));
        this.resolveReady(undefined);
      }
      await sleep(backoff.next(), this.abort.signal).catch(() => undefined);
    }
  }

  /** Passes each `qoe` and `error` message on as it comes; comments and `retry:` are the console's own business. */
  private async pump(res: Response): Promise<void> {
    if (!res.body) return;
    const decoder = new TextDecoder();
    let buf = '';
    for await (const chunk of res.body) {
      buf += decoder.decode(chunk as Uint8Array, { stream: true });
      for (let i = buf.indexOf('\n\n'); i !== -1; i = buf.indexOf('\n\n')) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        let event = 'message';
        const data: string[] = [];
        for (const line of block.split('\n')) {
          if (line.startsWith('event:')) event = line.slice(6).trim();
          else if (line.startsWith('data:')) data.push(line.slice(5).trimStart());
        }
        if ((event === 'qoe' || event === 'error') && data.length) this.group.send(event, data.join('\n'));
      }
    }
  }

  close(): void {
    this.closed = true;
    this.abort.abort();
    this.resolveReady(undefined);
    this.group.close();
  }
}

export class QoeRelays {
  private readonly relays = new Map<string, Relay>();

  constructor(
    private readonly o: {
      aggregatorUrl: string;
      /** Distinct queries relayed at once (each is one upstream stream). */
      maxRelays: number;
      log: Logger;
    },
  ) {}

  /** Open upstream streams. */
  get upstreams(): number {
    return this.relays.size;
  }

  /** Pages watching, over every query. */
  get clients(): number {
    let n = 0;
    for (const r of this.relays.values()) n += r.group.size;
    return n;
  }

  async open(req: IncomingMessage, res: ServerResponse, params: URLSearchParams): Promise<void> {
    const q = relayQuery(params);
    let r = this.relays.get(q);
    if (!r) {
      if (this.relays.size >= this.o.maxRelays)
        throw new OcdnError(ErrorCodes.BUSY, `${this.o.maxRelays} distinct QoE queries are relayed, the most this console serves; retry later`);
      const relay: Relay = new Relay(`${this.o.aggregatorUrl}/v1/qoe/stream${q ? `?${q}` : ''}`, this.o.log, () => {
        if (this.relays.get(q) === relay) this.relays.delete(q);
        relay.close();
      });
      this.relays.set(q, relay);
      r = relay;
    }
    const refusal = await r.ready;
    if (refusal) {
      if (this.relays.get(q) === r) this.relays.delete(q);
      r.close();
      res.writeHead(refusal.status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' });
      res.end(refusal.body);
      return;
    }
    if (req.method === 'HEAD') {
      res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store' });
      res.end();
      if (r.group.size === 0) this.drop(q, r);
      return;
    }
    // The page may have left while the upstream was being opened.
    if (res.destroyed || req.socket.destroyed) {
      if (r.group.size === 0) this.drop(q, r);
      return;
    }
    r.group.add(res);
  }

  private drop(q: string, r: Relay): void {
    if (this.relays.get(q) === r) this.relays.delete(q);
    r.close();
  }

  close(): void {
    for (const r of this.relays.values()) r.close();
    this.relays.clear();
  }
}

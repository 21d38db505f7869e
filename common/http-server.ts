import {
  createServer,
  STATUS_CODES,
  type IncomingMessage,
  type OutgoingHttpHeader,
  type OutgoingHttpHeaders,
  type RequestListener,
  type Server,
  ServerResponse,
} from 'node:http';
import type { Socket } from 'node:net';
import { Counter, Gauge, type Registry } from 'prom-client';
import { type CorsPolicy, corsPolicy, preflightHeaders, requestOrigin, withCors } from './cors.ts';
import { ErrorCodes, OcdnError } from './errors.ts';
import { errorBody, sendError } from './http.ts';
import type { Logger } from './log.ts';

export interface ServerLimits {
  /** Slowloris bounds: the whole head within this, the whole request within requestTimeoutMs. */
  headersTimeoutMs?: number;
  requestTimeoutMs?: number;
  keepAliveTimeoutMs?: number;
  /** Bytes of request head; past it Node itself answers 431. */
  maxHeaderSize?: number;
  /** Request headers read; one more is a 431, never a header dropped silently. */
  maxHeaders?: number;
  /** Open connections; past it new ones are closed at once (logged once per burst, counted). */
  maxConnections?: number;
  /** Share of maxConnections one client address may hold (0 < share ≤ 1). */
  perClientShare?: number;
  /** How often Node looks for connections past headersTimeout/requestTimeout. */
  connectionsCheckingIntervalMs?: number;
}

export const DEFAULT_LIMITS: Required<ServerLimits> = {
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  keepAliveTimeoutMs: 5_000,
  maxHeaderSize: 16_384,
  maxHeaders: 100,
  maxConnections: 8_192,
  perClientShare: 0.5,
  connectionsCheckingIntervalMs: 1_000,
};

export interface HardenedServer {
  server: Server;
  /** Open connections (the edge's stalled-write sweep walks them). */
  readonly sockets: ReadonlySet<Socket>;
  /**
   * Bytes the kernel took for every connection so far: what clients could have read, not what
   * handlers meant to send (an aborted 2 MB response counts what left, not 2 MB).
   */
  bytesWritten(): number;
  /** The limits in force. */
  readonly limits: Required<ServerLimits>;
}

/** How long without a refused connection ends a burst (one warn at its start, one line at its end). */
const BURST_QUIET_MS = 5_000;

/**
 * The one node:http server of every service, with the hygiene no handler should have to
 * remember: bounded heads (431 past the header count or size, 400 on a repeated Host, RFC 9112
 * §3.2), a connection cap with a per-client share, refusals logged once per burst and counted
 * in `ocdn_http_*` metrics, bytes written counted from the sockets themselves, and CORS on
 * every answer with OPTIONS preflights answered here (`cors`, default any origin; common/cors.ts).
 */
export function createHardenedServer(
  handler: RequestListener,
  opts: { limits?: ServerLimits; log?: Logger; registry?: Registry; headers?: Record<string, string>; cors?: CorsPolicy } = {},
): HardenedServer {
  const limits: Required<ServerLimits> = { ...DEFAULT_LIMITS, ...stripUndefined(opts.limits ?? {}) };
  if (!(limits.maxConnections >= 1)) throw new OcdnError(ErrorCodes.CONFIG, `maxConnections must be at least 1 (got ${limits.maxConnections})`);
  if (!(limits.perClientShare > 0 && limits.perClientShare <= 1))
    throw new OcdnError(ErrorCodes.CONFIG, `perClientShare must be in (0, 1] (got ${limits.perClientShare})`);
  if (!(limits.maxHeaders >= 1)) throw new OcdnError(ErrorCodes.CONFIG, `maxHeaders must be at least 1 (got ${limits.maxHeaders})`);
  const perClient = Math.max(1, Math.floor(limits.maxConnections * limits.perClientShare));
  const maxRaw = limits.maxHeaders * 2;
  const extra = opts.headers ?? {};
  const cors = opts.cors ?? corsPolicy();
  const log = opts.log;
  const registers = opts.registry ? [opts.registry] : [];

  const refusedRequests = new Counter({
    name: 'ocdn_http_requests_refused_total',
    help: 'Requests refused for their head before any handler ran, by reason (too_many_headers 431, duplicate_host 400; from the parser: head_too_large 431, head_timeout 408, bad_head 400).',
    labelNames: ['reason'],
    registers,
  });
  const refusedConnections = new Counter({
    name: 'ocdn_http_connections_refused_total',
    help: 'Connections closed on arrival, by reason (cap: maxConnections reached; per_client: one address past its share).',
    labelNames: ['reason'],
    registers,
  });
  const preflights = new Counter({
    name: 'ocdn_http_preflights_total',
    help: 'OPTIONS requests (CORS preflights) answered by the server itself: allowed 204, refused 403 (an Origin not in --cors-origins).',
    labelNames: ['result'],
    registers,
  });
  const sockets = new Set<Socket>();
  new Gauge({
    name: 'ocdn_http_connections_open',
    help: 'Open client connections.',
    registers,
    collect() {
      this.set(sockets.size);
    },
  });

  function refuse(res: Parameters<RequestListener>[1], reason: string, err: OcdnError): void {
    refusedRequests.inc({ reason });
    // Counted always; a line each only at debug, or a flood of bad heads floods the log.
    log?.debug({ reason, remote: res.socket?.remoteAddress, status: reason === 'too_many_headers' ? 431 : 400 }, 'request refused');
    res.shouldKeepAlive = false;
    sendError(res, err, { connection: 'close', ...extra });
  }

  // Every OPTIONS, on any path: handlers only ever see the methods they serve.
  function preflight(req: IncomingMessage, res: ServerResponse): void {
    const origin = requestOrigin(req);
    if (origin !== undefined && !cors.allows(origin)) {
      preflights.inc({ result: 'refused' });
      sendError(res, new OcdnError(ErrorCodes.FORBIDDEN, `origin ${origin.slice(0, 200)} may not read this server's answers (not in --cors-origins)`), extra);
      return;
    }
    preflights.inc({ result: 'allowed' });
    res.writeHead(204, { ...preflightHeaders(cors, origin), ...extra });
    res.end();
  }

  const guarded: RequestListener = (req, res) => {
    const raw = req.rawHeaders;
    // Node keeps at most maxHeaders + 1 (maxHeadersCount below): one more than allowed means
    // some may have been cut, so the request is refused whole rather than served without them.
    if (raw.length > maxRaw)
      return refuse(res, 'too_many_headers', new OcdnError(ErrorCodes.HEADERS_TOO_LARGE, `more than ${limits.maxHeaders} request headers`));
    let hosts = 0;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i]!;
      // The usual spellings first: toLowerCase() makes a string, and this runs on every request.
      if (name.length === 4 && (name === 'Host' || name === 'host' || name.toLowerCase() === 'host') && ++hosts > 1)
        return refuse(res, 'duplicate_host', new OcdnError(ErrorCodes.BAD_REQUEST, 'more than one Host header (RFC 9112 §3.2)'));
    }
    if (req.method === 'OPTIONS') return preflight(req, res);
    handler(req, res);
  };

  const server = createServer(
    {
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestTimeoutMs,
      keepAliveTimeout: limits.keepAliveTimeoutMs,
      maxHeaderSize: limits.maxHeaderSize,
      connectionsCheckingInterval: Math.min(limits.connectionsCheckingIntervalMs, limits.headersTimeoutMs),
      ServerResponse: corsResponse(cors),
    },
    guarded,
  );
  server.keepAliveTimeout = limits.keepAliveTimeoutMs;
  server.maxHeadersCount = limits.maxHeaders + 1;
  server.maxConnections = limits.maxConnections;

  // ---- refusals: one warn when a burst starts, one line with its total when it ends ----
  let burst = 0;
  let burstByReason: Record<string, number> = {};
  let quiet: NodeJS.Timeout | undefined;
  function connectionRefused(reason: 'cap' | 'per_client', remote: string | undefined): void {
    refusedConnections.inc({ reason });
    burstByReason[reason] = (burstByReason[reason] ?? 0) + 1;
    if (burst++ === 0) {
      log?.warn(
        { reason, remote, open: sockets.size, maxConnections: limits.maxConnections, perClient },
        'connection refused: limit reached (further refusals in this burst are counted in ocdn_http_connections_refused_total, not logged)',
      );
    }
    if (quiet === undefined) {
      quiet = setTimeout(() => {
        log?.info({ refused: burst, byReason: burstByReason, open: sockets.size }, 'connection refusals stopped');
        burst = 0;
        burstByReason = {};
        quiet = undefined;
      }, BURST_QUIET_MS);
      quiet.unref();
    } else quiet.refresh();
  }
  server.on('drop', (data?: { remoteAddress?: string }) => connectionRefused('cap', data?.remoteAddress));

  // Heads Node refuses before any handler runs (too large, too slow, unparsable): its own reply
  // is a bare status line, which a page cannot read (no CORS) and a client cannot act on (no
  // error body). The same answer as every other refusal instead, then the socket is closed.
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    const inFlight = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage;
    if (err.code === 'ECONNRESET' || !socket.writable || inFlight?.headersSent) {
      socket.destroy();
      return;
    }
    const refusal = headRefusal(err);
    refusedRequests.inc({ reason: refusal.reason });
    const body = JSON.stringify(errorBody(refusal.error));
    const status = refusal.status;
    const fields = { ...(cors.origins === '*' ? cors.fixed : {}), ...extra };
    const lines = Object.entries(fields).map(([k, v]) => `${k}: ${String(v)}\r\n`);
    socket.end(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nconnection: close\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${lines.join('')}\r\n${body}`,
    );
  });

  // ---- connections: per-client share and bytes the kernel took ----
  const byClient = new Map<string, number>();
  let closedBytes = 0;
  server.on('connection', (s: Socket) => {
    const remote = s.remoteAddress ?? '?';
    const held = byClient.get(remote) ?? 0;
    if (held >= perClient) {
      connectionRefused('per_client', remote);
      s.destroy();
      return;
    }
    byClient.set(remote, held + 1);
    sockets.add(s);
    trackUnsent(s);
    s.once('close', () => {
      sockets.delete(s);
      const n = (byClient.get(remote) ?? 1) - 1;
      if (n <= 0) byClient.delete(remote);
      else byClient.set(remote, n);
      closedBytes += bytesSent(s);
    });
  });

  return {
    server,
    sockets,
    limits,
    bytesWritten() {
      let open = 0;
      // Open sockets: what was handed on minus what still waits (a lower bound until it drains).
      for (const s of sockets) open += bytesSent(s);
      return closedBytes + open;
    },
  };
}

/**
 * Bytes of `socket` the kernel took: handed on minus what still waits while open (a lower bound
 * until it drains), minus what libuv still held when it was destroyed.
 */
export function bytesSent(socket: Socket): number {
  if (socket.destroyed) return socket.bytesWritten - (unsentAtDestroy.get(socket) ?? 0);
  return Math.max(0, socket.bytesWritten - socket.writableLength);
}

/**
 * A response cut by its client leaves bytes in libuv's queue that never reached the kernel;
 * `bytesWritten` counts them as sent. Their size is only readable until the handle closes, so it
 * is taken as the socket is destroyed (once per connection, never per request).
 */
const unsentAtDestroy = new WeakMap<Socket, number>();
function trackUnsent(s: Socket): void {
  const inner = s as unknown as { _destroy: (err: Error | null, cb: (err: Error | null) => void) => void; _handle?: { writeQueueSize?: number } | null };
  const destroy = inner._destroy;
  inner._destroy = function (this: typeof inner, err, cb) {
    const queued = this._handle?.writeQueueSize;
    if (typeof queued === 'number' && queued > 0) unsentAtDestroy.set(s, queued);
    destroy.call(this, err, cb);
  };
}

type HeadersArg = OutgoingHttpHeaders | OutgoingHttpHeader[] | undefined;

/**
 * A response whose head always carries the CORS fields, whatever path wrote it (handlers,
 * sendError, Node's implicit head on a bare end()). Added in writeHead and only when absent:
 * a head object that already has them (the edge's prebuilt hit headers with '*') goes to Node
 * untouched, because setHeader, or any progressive header, moves a response onto Node's
 * header-merge path, which cost the hit path ~10% (commit c293f8b).
 */
function corsResponse(cors: CorsPolicy): typeof ServerResponse {
  const any = cors.origins === '*';
  class CorsResponse extends ServerResponse {
    override writeHead(statusCode: number, reason?: string | HeadersArg, headers?: HeadersArg): this {
      const hasReason = typeof reason === 'string';
      let h = hasReason ? headers : (reason as HeadersArg);
      if (h !== undefined && !Array.isArray(h) && h['access-control-allow-origin'] !== undefined)
        return write(this, statusCode, hasReason ? reason : undefined, h);
      if (this.hasHeader('access-control-allow-origin')) return write(this, statusCode, hasReason ? reason : undefined, h);
      const fields = any ? cors.fixed : cors.fields(requestOrigin(this.req));
      // Headers set one by one count too (Node merges them with these), so a Vary set earlier is kept.
      if (this.getHeaderNames().length > 0 && !Array.isArray(h)) h = { ...this.getHeaders(), ...h };
      return write(this, statusCode, hasReason ? reason : undefined, withCors(h, fields));
    }
  }
  return CorsResponse as unknown as typeof ServerResponse;
}

/**
 * Writes a head that already carries the CORS fields straight to Node, past the CORS response's
 * own writeHead. Only for the edge's hit path, where the override's dispatch showed in the
 * 100 KB hit benchmark (npm run bench:edge, one session, edge/bare medians: 0.91 and 0.91 before
 * CORS; 0.77, 0.84, 0.81 through the override; 0.96, 0.86, 0.87, 0.84 past it; A/A noise ±30-97%).
 */
export function writeHeadAsIs(res: ServerResponse, statusCode: number, headers: OutgoingHttpHeaders): void {
  ServerResponse.prototype.writeHead.call(res, statusCode, headers);
}

function write<T extends ServerResponse>(res: T, statusCode: number, reason: string | undefined, headers: HeadersArg): T {
  const head = ServerResponse.prototype.writeHead as (this: T, s: number, r?: string | HeadersArg, h?: HeadersArg) => T;
  return reason === undefined ? head.call(res, statusCode, headers) : head.call(res, statusCode, reason, headers);
}

/** What Node's parser refused, as the one error body (Node's own mapping: 431, 408, else 400). */
function headRefusal(err: NodeJS.ErrnoException): { status: number; reason: string; error: OcdnError } {
  if (err.code === 'HPE_HEADER_OVERFLOW')
    return { status: 431, reason: 'head_too_large', error: new OcdnError(ErrorCodes.HEADERS_TOO_LARGE, 'request head larger than the server reads') };
  if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT')
    return { status: 408, reason: 'head_timeout', error: new OcdnError(ErrorCodes.REQUEST_TIMEOUT, 'request head not received in time') };
  return {
    status: 400,
    reason: 'bad_head',
    error: new OcdnError(ErrorCodes.BAD_REQUEST, `malformed request (${String(err.code ?? 'parse error').slice(0, 40)})`),
  };
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

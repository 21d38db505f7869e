import { CATALOG_PATH, serveCatalog } from './catalog-route.ts';
import type { IncomingMessage, OutgoingHttpHeaders, RequestListener, ServerResponse } from 'node:http';
import { describeError, ErrorCodes, isOcdnError, OcdnError } from '../common/errors.ts';
import { errorBody, sendError, sendJson, sendMethodNotAllowed, statusOf } from '../common/http.ts';
import { bytesSent } from '../common/http-server.ts';
import type { Logger } from '../common/log.ts';
import { sendMetrics } from '../common/metrics.ts';
import type { AccessLog } from './access-log.ts';
import type { Admin } from './admin.ts';
import type { TokenGate } from './auth.ts';
import type { EdgeCache, Lookup, Served, Tier } from './cache.ts';
import { parseCmcd } from './cmcd.ts';
import { CmsdDynamic, DEFAULT_DURESS_IN_FLIGHT } from './cmsd.ts';
import { ageSec, cacheStatusOf, hitHeaders } from './entry.ts';
import type { CacheLabel, EdgeMetrics } from './metrics.ts';
import { splitPathToken } from '../common/token.ts';
import { writeHeadAsIs } from '../common/http-server.ts';
import { checkPath, queryArg } from './path.ts';
import { type ByteSpan, etagMatches, parseRange } from './range.ts';
import type { Upstream } from './upstream.ts';

export interface EdgeContext {
  id: string;
  log: Logger;
  tokens: TokenGate | null;
  upstream: Upstream;
  cache: EdgeCache;
  metrics: EdgeMetrics;
  admin: Admin;
  negativeTtlMs: number;
  /** Requests waiting on upstream above which CMSD-Dynamic says `du` (default edge/cmsd.ts DEFAULT_DURESS_IN_FLIGHT). */
  duressInFlight?: number;
  /** Access records for the miss classification (edge/access-log.ts), when brokers were given. */
  access?: AccessLog | undefined;
}

/** The edge's request listener and the state its lifecycle (edge/server.ts) reads and sets. */
export interface EdgeHandler {
  handle: RequestListener;
  /** Requests waiting on upstream right now. */
  readonly inFlight: number;
  readonly draining: boolean;
  /** From now on every response closes its connection, and readiness says so (close()). */
  drain(): void;
}

/** A power of two. */
const HIT_SAMPLE_EVERY = 16;

/** Handlers of one non-/vod path by method; HEAD is served by GET. */
export type Route = { GET?: (req: IncomingMessage, res: ServerResponse) => void | Promise<void> };

/** A 304 carries the validators and caching headers of the 200 it stands for, no body headers. */
function notModifiedHeaders(base: OutgoingHttpHeaders): OutgoingHttpHeaders {
  const { 'content-length': _l, 'content-type': _t, ...rest } = base;
  return rest;
}

/** The edge's request listener: /vod (the hit path first), then a small route table. */
export function edgeRoutes(ctx: EdgeContext): EdgeHandler {
  const { id, log, tokens, upstream, cache: edgeCache, metrics, admin, access } = ctx;
  const logHits = log.isLevelEnabled('debug');
  const cacheStatusName = `ocdn-${id}`;
  const negativeCacheControl = `public, max-age=${Math.floor(ctx.negativeTtlMs / 1000)}`;
  const idHeader = { 'x-edge-id': id };
  // Plain bindings, not fields of a shared object: the hit path reads `draining` per request.
  let inFlight = 0;
  let draining = false;
  let readiness: { at: number; ok: boolean; reason?: string } | undefined;
  let probing: Promise<void> | undefined;
  const duressInFlight = ctx.duressInFlight ?? DEFAULT_DURESS_IN_FLIGHT;
  const cmsd = new CmsdDynamic({ id, duress: () => draining || inFlight > duressInFlight });
  // One hit in HIT_SAMPLE_EVERY times its delivery for CMSD's etp: a listener per hit would cost the hit path.
  let hitCount = 0;

  // ---- responses -------------------------------------------------------------------------
  /**
   * The one point where a /vod response is over, sent whole or cut: `bytes` are what reached the
   * socket for it, `tier` where they came from (undefined when no object was served: refusals,
   * upstream errors, aborts). Slow-path responses all come here from their 'close'; plain RAM
   * hits only when hits are logged (debug), so the hit path adds no listener. It writes the
   * request's log line; the access record is taken by logWhenDone, which knows the body bytes.
   */
  function finished(
    level: 'info' | 'debug',
    req: IncomingMessage,
    path: string,
    query: string,
    status: number,
    cache: CacheLabel,
    tier: Tier | undefined,
    bytes: number,
    startedAt: number,
    detail?: string,
  ): void {
    if (level !== 'info' && !logHits) return;
    const cmcdArg = query === '' ? undefined : queryArg(query, 'CMCD');
    log[level](
      {
        method: req.method,
        path,
        status,
        cache,
        ...(tier === undefined ? {} : { tier }),
        bytes,
        ms: Date.now() - startedAt,
        cmcd: parseCmcd(cmcdArg, req.headers),
        remote: req.socket.remoteAddress,
        ...(detail ? { detail } : {}),
      },
      'request',
    );
  }

  /** A /vod request refused before any cache or upstream work (400, 403, 405). */
  function refuse(req: IncomingMessage, res: ServerResponse, path: string, query: string, err: OcdnError, extra: Record<string, string> = {}): void {
    if (draining) res.shouldKeepAlive = false;
    const status = sendError(res, err, { ...idHeader, ...extra });
    metrics.count('NONE', status);
    finished('debug', req, path, query, status, 'NONE', undefined, 0, Date.now(), err.message);
  }

  const cacheStatus = (lookup: Lookup): string => cacheStatusOf(cacheStatusName, lookup);

  /** Everything but the plain 200 hit: misses, coalesced, stale, 304, 206, 416, negative entries. */
  function respond(
    req: IncomingMessage,
    res: ServerResponse,
    path: string,
    query: string,
    lookup: Lookup,
    tier: Tier,
    range: string | undefined,
    inm: string | undefined,
    ifRange: string | undefined,
    startedAt: number,
  ): void {
    if (res.destroyed) return aborted(req, path, query, lookup.outcome, startedAt);
    // While draining, every response closes its connection so close() is not held by keep-alive.
    if (draining) res.shouldKeepAlive = false;
    const { entry, outcome } = lookup;
    const head = req.method === 'HEAD';
    const level = outcome === 'HIT' ? 'debug' : 'info';
    const common = { 'x-edge-id': id, 'x-cache': outcome, 'cache-status': cacheStatus(lookup) };
    if (entry.kind === 'missing') {
      // The one error body, cacheable for the negative TTL like the 404 it is.
      const body = JSON.stringify(errorBody(new OcdnError(ErrorCodes.NOT_FOUND, `not found: ${path}`)));
      res.writeHead(404, {
        'content-type': 'application/json; charset=utf-8',
        'content-length': Buffer.byteLength(body),
        'cache-control': negativeCacheControl,
        age: String(ageSec(entry, Date.now())),
        ...common,
      });
      const from = bytesSent(req.socket);
      res.end(head ? undefined : body);
      metrics.count(outcome, 404);
      logWhenDone(level, req, res, from, path, query, 404, outcome, undefined, startedAt);
      return;
    }
    const now = Date.now();
    // This edge's CMSD item as of now; after a fill it is appended to what the tier above sent.
    const dynamic = outcome === 'HIT' || outcome === 'STALE' ? cmsd.fresh(now) : cmsd.chained(entry.upstreamCmsdDynamic, now);
    const base = { ...hitHeaders(entry, now), ...common, 'cmsd-dynamic': dynamic };
    let status = 200;
    let body: Buffer | string | undefined = entry.body;
    let headers: OutgoingHttpHeaders = base;
    if (inm !== undefined && etagMatches(inm, entry.etag)) {
      status = 304;
      body = undefined;
      headers = notModifiedHeaders(base);
    } else if (range !== undefined && (ifRange === undefined || ifRange.trim() === entry.etag)) {
      const span = parseRange(range, entry.body.length);
      if (span === 'unsatisfiable') {
        status = 416;
        body = JSON.stringify(
          errorBody(new OcdnError(ErrorCodes.RANGE_NOT_SATISFIABLE, `range ${range.slice(0, 100)} is outside the ${entry.body.length}-byte object`)),
        );
        headers = {
          ...common,
          'content-type': 'application/json; charset=utf-8',
          'content-range': `bytes */${entry.body.length}`,
          'content-length': String(Buffer.byteLength(body)),
          'accept-ranges': 'bytes',
          'cache-control': 'no-store',
          etag: entry.etag,
        };
      } else if (span !== undefined) {
        status = 206;
        body = entry.body.subarray(span.start, span.end + 1);
        headers = { ...base, 'content-length': String(body.length), 'content-range': `bytes ${span.start}-${span.end}/${entry.body.length}` };
      }
    }
    const from = bytesSent(req.socket);
    if (!head && body !== undefined && body.length > 0) cmsd.sample(res, body.length);
    res.writeHead(status, headers);
    if (head || body === undefined) res.end();
    else res.end(body);
    metrics.count(outcome, status);
    logWhenDone(level, req, res, from, path, query, status, outcome, tier, startedAt, lookup.error ? describeError(lookup.error) : undefined);
  }

  /** A miss streamed while it is filled, or a disk copy streamed from its file: like respond(), the body piped. */
  function respondStream(
    req: IncomingMessage,
    res: ServerResponse,
    path: string,
    query: string,
    served: Served & { kind: 'stream' },
    range: string | undefined,
    inm: string | undefined,
    ifRange: string | undefined,
    startedAt: number,
  ): void {
    const { head: h, outcome, body: source } = served;
    if (res.destroyed) {
      source.skip();
      return aborted(req, path, query, outcome, startedAt);
    }
    if (draining) res.shouldKeepAlive = false;
    const level = outcome === 'HIT' ? 'debug' : 'info';
    const common = {
      'x-edge-id': id,
      'x-cache': outcome,
      'cache-status': cacheStatusOf(cacheStatusName, { ...served, tier: served.tier === 'disk' ? 'disk' : undefined }),
    };
    const now = Date.now();
    const dynamic = outcome === 'HIT' || outcome === 'STALE' ? cmsd.fresh(now) : cmsd.chained(h.upstreamCmsdDynamic, now);
    const base = { ...hitHeaders(h, now), ...common, 'cmsd-dynamic': dynamic };
    let status = 200;
    let headers: OutgoingHttpHeaders = base;
    let span: ByteSpan | undefined;
    let error: string | undefined;
    if (inm !== undefined && h.etag !== undefined && etagMatches(inm, h.etag)) {
      status = 304;
      headers = notModifiedHeaders(base);
    } else if (range !== undefined && h.size !== undefined && (ifRange === undefined || ifRange.trim() === h.etag)) {
      const s = parseRange(range, h.size);
      if (s === 'unsatisfiable') {
        status = 416;
        error = JSON.stringify(errorBody(new OcdnError(ErrorCodes.RANGE_NOT_SATISFIABLE, `range ${range.slice(0, 100)} is outside the ${h.size}-byte object`)));
        headers = {
          ...common,
          'content-type': 'application/json; charset=utf-8',
          'content-range': `bytes */${h.size}`,
          'content-length': String(Buffer.byteLength(error)),
          'accept-ranges': 'bytes',
          'cache-control': 'no-store',
          ...(h.etag === undefined ? {} : { etag: h.etag }),
        };
      } else if (s !== undefined) {
        status = 206;
        span = s;
        headers = { ...base, 'content-length': String(s.end - s.start + 1), 'content-range': `bytes ${s.start}-${s.end}/${h.size}` };
      }
    }
    const from = bytesSent(req.socket);
    res.writeHead(status, headers);
    metrics.count(outcome, status);
    logWhenDone(level, req, res, from, path, query, status, outcome, served.tier, startedAt, served.error ? describeError(served.error) : undefined);
    if (req.method === 'HEAD' || status === 304 || status === 416) {
      source.skip();
      res.end(req.method === 'HEAD' ? undefined : error);
      return;
    }
    const length = span === undefined ? h.size : span.end - span.start + 1;
    if (length !== undefined && length > 0) cmsd.sample(res, length);
    source.pipe(res, span).catch((err: unknown) => {
      log.error({ err: describeError(err), path }, 'streaming a response failed');
      res.destroy();
    });
  }

  /**
   * The access line once the response is over (sent or cut), with the bytes that reached the
   * socket for it rather than the body's length. Slow path only: the hit path logs at debug.
   */
  function logWhenDone(
    level: 'info' | 'debug',
    req: IncomingMessage,
    res: ServerResponse,
    from: number,
    path: string,
    query: string,
    status: number,
    cache: CacheLabel,
    tier: Tier | undefined,
    startedAt: number,
    detail?: string,
  ): void {
    const socket = req.socket;
    res.once('close', () => {
      const sent = bytesSent(socket) - from;
      // The access record counts body bytes, as players do; the log line what the kernel took.
      if (tier !== undefined) access?.served(req, path, query, Math.max(0, sent - headerBytes(res)), tier);
      finished(level, req, path, query, status, cache, tier, sent, startedAt, detail);
    });
  }

  /**
   * The client left before its answer was ready (nginx's 499): counted and logged like any
   * other request, so aborts never vanish from requests_total or the access log.
   */
  function aborted(req: IncomingMessage, path: string, query: string, cache: CacheLabel, startedAt: number): void {
    metrics.count(cache, 499);
    finished('info', req, path, query, 499, cache, undefined, 0, startedAt, 'client closed the connection before the response');
  }

  function upstreamFailed(req: IncomingMessage, res: ServerResponse, path: string, query: string, err: unknown, startedAt: number): void {
    if (res.destroyed) return aborted(req, path, query, 'MISS', startedAt);
    if (draining) res.shouldKeepAlive = false;
    // Whatever went wrong upstream, this edge was a gateway that got no usable answer.
    const e = isOcdnError(err) ? err : new OcdnError(ErrorCodes.ORIGIN_UNAVAILABLE, describeError(err), { cause: err });
    const timeout = e.code === ErrorCodes.ORIGIN_TIMEOUT;
    const status = sendError(res, e, {
      'x-edge-id': id,
      'x-cache': 'MISS',
      'cache-status': `${cacheStatusName}; fwd=miss; detail=${timeout ? 'upstream-timeout' : 'upstream-error'}`,
    });
    metrics.count('MISS', status);
    finished('info', req, path, query, status, 'MISS', undefined, 0, startedAt, describeError(e));
  }

  function onSlowDone(): void {
    inFlight--;
  }

  // ---- /vod ------------------------------------------------------------------------------
  function serveVod(req: IncomingMessage, res: ServerResponse, url: string): void {
    const q = url.indexOf('?');
    let path = q === -1 ? url : url.slice(0, q);
    const query = q === -1 ? '' : url.slice(q + 1);
    // `/t/<token>/vod/…` (common/token.ts): the token leaves the path here, so the cache key,
    // the path check and the access log see the object path, whatever token carried it.
    let pathToken: string | undefined;
    if (path.charCodeAt(1) === 116 /* t */) {
      const split = splitPathToken(path);
      if (!split.ok) return refuse(req, res, '/t/…', query, new OcdnError(ErrorCodes.FORBIDDEN, split.reason));
      path = split.path;
      pathToken = split.token;
    }
    // Only checked paths are ever stored, so a fresh entry vouches for its path: the hit path
    // skips the regex and one map lookup serves as both check and cache probe.
    const entry = edgeCache.fresh(path);
    if (entry === undefined) {
      const bad = checkPath(path);
      if (bad !== undefined) return refuse(req, res, path.slice(0, 200), query, new OcdnError(ErrorCodes.BAD_REQUEST, bad));
    }
    const method = req.method;
    if (method !== 'GET' && method !== 'HEAD') {
      return refuse(req, res, path, query, new OcdnError(ErrorCodes.METHOD, `method ${String(method).slice(0, 16)} not allowed (use GET, HEAD)`), {
        allow: 'GET, HEAD',
      });
    }
    if (tokens !== null) {
      const why = tokens.check(path, pathToken ?? (q === -1 ? undefined : queryArg(query, 'token')));
      if (why !== undefined) return refuse(req, res, path, query, new OcdnError(ErrorCodes.FORBIDDEN, why));
    }
    // Only three request headers matter here; scanning rawHeaders avoids building req.headers.
    let range: string | undefined;
    let inm: string | undefined;
    let ifRange: string | undefined;
    const raw = req.rawHeaders;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i]!;
      const len = name.length;
      if (len === 5) {
        if (name.toLowerCase() === 'range') range = raw[i + 1];
      } else if (len === 13) {
        if (name.toLowerCase() === 'if-none-match') inm = raw[i + 1];
      } else if (len === 8) {
        if (name.toLowerCase() === 'if-range') ifRange = raw[i + 1];
      }
    }
    if (entry !== undefined && entry.kind === 'object' && range === undefined && inm === undefined) {
      // The hit path: precomputed headers, the stored Buffer, two counters.
      if (draining) res.shouldKeepAlive = false;
      const now = Date.now();
      const head = hitHeaders(entry, now, cmsd.current(now));
      if ((++hitCount & (HIT_SAMPLE_EVERY - 1)) === 0 && method !== 'HEAD') cmsd.sample(res, entry.body.length);
      // With CORS for any origin the hit object already carries it: straight to Node.
      if (head['access-control-allow-origin'] !== undefined) writeHeadAsIs(res, 200, head);
      else res.writeHead(200, head);
      const from = logHits ? bytesSent(req.socket) : 0;
      res.end(method === 'HEAD' ? undefined : entry.body);
      metrics.count('HIT', 200);
      // Logged hits record their access when they close (logWhenDone()); the rest here, with no listener.
      if (logHits) logWhenDone('debug', req, res, from, path, query, 200, 'HIT', 'ram', Date.now());
      else access?.served(req, path, query, method === 'HEAD' ? 0 : entry.body.length, 'ram');
      return;
    }
    const startedAt = Date.now();
    if (entry !== undefined)
      return respond(req, res, path, query, { entry, outcome: 'HIT', stored: false, fwd: 'miss' }, 'ram', range, inm, ifRange, startedAt);
    inFlight++;
    res.once('close', onSlowDone);
    edgeCache
      .serve(path, undefined, { range: range !== undefined })
      .then(
        (served) =>
          served.kind === 'entry'
            ? respond(req, res, path, query, served.lookup, served.tier, range, inm, ifRange, startedAt)
            : respondStream(req, res, path, query, served, range, inm, ifRange, startedAt),
        (err: unknown) => upstreamFailed(req, res, path, query, err, startedAt),
      )
      .catch((err: unknown) => {
        log.error({ err: describeError(err), path }, 'response failed');
        sendError(res, err, idHeader);
      });
  }

  // ---- everything else -------------------------------------------------------------------
  async function checkReady(): Promise<{ ok: boolean; reason?: string }> {
    if (draining) return { ok: false, reason: 'draining' };
    if (readiness && Date.now() - readiness.at < 1_000) return readiness;
    probing ??= upstream
      .ping()
      .then(
        () => void (readiness = { at: Date.now(), ok: true }),
        (err: unknown) =>
          void (readiness = { at: Date.now(), ok: false, reason: `${upstream.kind === 's3' ? 'origin' : 'parent'} unreachable: ${describeError(err)}` }),
      )
      .finally(() => (probing = undefined));
    await probing;
    return readiness!;
  }

  /** Exact paths besides /vod and /admin; add a route with one line here. */
  const routes = new Map<string, Route>([
    ['/healthz', { GET: (_req, res) => sendJson(res, 200, { ok: true, id, draining: draining }) }],
    [
      '/readyz',
      {
        GET: async (_req, res) => {
          const r = await checkReady();
          sendJson(res, r.ok ? 200 : 503, { ready: r.ok, id, upstream: upstream.kind, ...(r.reason ? { reason: r.reason } : {}) });
        },
      },
    ],
    ['/metrics', { GET: (_req, res) => sendMetrics(res, metrics.registry) }],
    [
      CATALOG_PATH,
      {
        GET: (req, res) =>
          serveCatalog(req, res, { id, cache: edgeCache, metrics, cacheStatusName, log, draining: () => draining, waiting: (d) => (inFlight += d) }),
      },
    ],
  ]);

  async function serveOther(req: IncomingMessage, res: ServerResponse, url: string): Promise<void> {
    const q = url.indexOf('?');
    const path = q === -1 ? url : url.slice(0, q);
    if (path === '/admin' || path.startsWith('/admin/')) return admin.handle(req, res, path, idHeader);
    const route = routes.get(path);
    if (route === undefined) throw new OcdnError(ErrorCodes.NOT_FOUND, `not found: ${path.slice(0, 200)} (this edge serves /vod/... and /catalog.json)`);
    if (req.method !== 'GET' && req.method !== 'HEAD') return void sendMethodNotAllowed(res, req.method, 'GET, HEAD', idHeader);
    await route.GET?.(req, res);
  }

  return {
    handle(req, res) {
      const url = req.url ?? '/';
      if (url.startsWith('/vod') || url.startsWith('/t/')) return serveVod(req, res, url);
      if (draining) res.shouldKeepAlive = false;
      serveOther(req, res, url).catch((err: unknown) => {
        if (statusOf(err) >= 500) log.error({ err: describeError(err), url: url.slice(0, 200) }, 'request failed');
        sendError(res, err, idHeader);
      });
    },
    get inFlight() {
      return inFlight;
    },
    get draining() {
      return draining;
    },
    drain() {
      draining = true;
    },
  };
}

/** Bytes of the status line and headers Node wrote for `res` (its `_header`; 0 before they are sent). */
function headerBytes(res: ServerResponse): number {
  const h = (res as unknown as { _header?: string | null })._header;
  return typeof h === 'string' ? Buffer.byteLength(h, 'latin1') : 0;
}

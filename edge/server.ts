import { createServer, type IncomingMessage, type OutgoingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Registry } from 'prom-client';
import type { EdgeHeartbeat } from '../common/contracts.ts';
import { ErrorCodes, OcdnError, describeError, isOcdnError } from '../common/errors.ts';
import { closeServer, listen, sendJson, sendText } from '../common/http.ts';
import { createLogger, type Logger } from '../common/log.ts';
import { sendMetrics } from '../common/metrics.ts';
import type { OriginReader } from '../origin/reader.ts';
import { Admin } from './admin.ts';
import { TokenGate } from './auth.ts';
import { EdgeCache, type Lookup } from './cache.ts';
import { isCatalogRequest, serveCatalog } from './catalog-route.ts';
import { parseCmcd } from './cmcd.ts';
import { ageSec, hitHeaders } from './entry.ts';
import { Heartbeat } from './heartbeat.ts';
import { EdgeMetrics, type CacheLabel } from './metrics.ts';
import { checkPath, queryArg } from './path.ts';
import { etagMatches, parseRange } from './range.ts';
import { ParentUpstream, S3Upstream, type Upstream } from './upstream.ts';

export interface EdgeOptions {
  /** `[A-Za-z0-9._-]`, e.g. "edge-1"; appears in X-Edge-Id, Cache-Status and metrics. */
  id: string;
  /** 0 (default) = any free port. */
  port?: number;
  host?: string;
  region: string;
  capacityBytes: number;
  /** Where misses go, unless `parentUrl` is given. */
  origin?: OriginReader;
  /** Shield tier: misses go to this edge (same path) instead of S3. */
  parentUrl?: string;
  /** Steering base URL(s) for heartbeats: one, a list, or a comma-separated string of replicas. */
  steeringUrl?: string | readonly string[];
  /** HMAC secret shared with steering; `null` turns token checks off (so does leaving it out). */
  tokenSecret?: string | null;
  /** Bearer token for /admin/*; without it the admin API answers 403. */
  adminToken?: string;
  /** URL players reach this edge at (heartbeats); default http://host:port. */
  publicUrl?: string;
  heartbeatIntervalMs?: number;
  playlistTtlMs?: number;
  segmentTtlMs?: number;
  /** TTL of a cached 404. */
  negativeTtlMs?: number;
  staleIfErrorMs?: number;
  /** Parent-tier request timeout (the S3 reader has its own). */
  upstreamTimeoutMs?: number;
  /** Hash each filled body against its declared SHA-256 (default true). */
  verifyHash?: boolean;
  /** Slowloris and huge-header bounds. */
  headersTimeoutMs?: number;
  requestTimeoutMs?: number;
  keepAliveTimeoutMs?: number;
  maxHeaderSize?: number;
  /** A response whose client accepts no bytes for this long (checked at this period) is cut. */
  stalledWriteTimeoutMs?: number;
  /** How long close() lets in-flight responses finish before cutting them. */
  drainTimeoutMs?: number;
  log?: Logger;
  /** process_* and nodejs_* metrics too (the CLI turns this on; in-process clusters leave it off). */
  defaultMetrics?: boolean;
}

export interface Edge {
  id: string;
  /** Base URL, no trailing slash. */
  url: string;
  port: number;
  registry: Registry;
  cache: EdgeCache;
  metrics: EdgeMetrics;
  server: Server;
  /** Requests waiting on upstream right now. */
  readonly inFlight: number;
  /** Stop accepting, finish in-flight responses (bounded by drainTimeoutMs), release everything. Idempotent. */
  close(): Promise<void>;
}

const ID_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;

export async function startEdge(opts: EdgeOptions): Promise<Edge> {
  if (!ID_PATTERN.test(opts.id)) throw new OcdnError(ErrorCodes.CONFIG, `edge id "${opts.id}" must be 1-64 characters of A-Z a-z 0-9 . _ -`);
  if (!(opts.capacityBytes > 0)) throw new OcdnError(ErrorCodes.CONFIG, `edge capacity must be positive (got ${opts.capacityBytes})`);
  if (!opts.origin && !opts.parentUrl) throw new OcdnError(ErrorCodes.CONFIG, 'an edge needs an origin reader or a parent URL for its misses');

  const id = opts.id;
  const host = opts.host ?? '127.0.0.1';
  const log = opts.log ?? createLogger('edge', { fields: { edge: id } });
  const logHits = log.isLevelEnabled('debug');
  const cacheStatusName = `ocdn-${id}`;
  const tokenSecret = opts.tokenSecret ?? null;
  const tokens = tokenSecret === null ? null : new TokenGate(tokenSecret);
  const upstream: Upstream = opts.parentUrl
    ? new ParentUpstream(opts.parentUrl, { timeoutMs: opts.upstreamTimeoutMs ?? 5_000, tokenSecret, edgeId: id })
    : new S3Upstream(opts.origin!);

  let cache: EdgeCache | undefined;
  const metrics = new EdgeMetrics({
    edgeId: id,
    cacheStats: () => ({ bytes: cache?.bytes ?? 0, items: cache?.items ?? 0 }),
    defaultMetrics: opts.defaultMetrics,
  });
  cache = new EdgeCache({
    capacityBytes: opts.capacityBytes,
    upstream,
    metrics,
    edgeId: id,
    cacheStatusName,
    playlistTtlMs: opts.playlistTtlMs ?? 5_000,
    segmentTtlMs: opts.segmentTtlMs ?? 3_600_000,
    negativeTtlMs: opts.negativeTtlMs ?? 2_000,
    staleIfErrorMs: opts.staleIfErrorMs ?? 86_400_000,
    verifyHash: opts.verifyHash ?? true,
  });
  const edgeCache = cache;
  const admin = new Admin({ cache: edgeCache, adminToken: opts.adminToken, log });
  const negativeCacheControl = `public, max-age=${Math.floor((opts.negativeTtlMs ?? 2_000) / 1000)}`;

  let inFlight = 0;
  let draining = false;

  // ---- responses -------------------------------------------------------------------------

  function accessLog(
    level: 'info' | 'debug',
    req: IncomingMessage,
    path: string,
    query: string,
    status: number,
    cache: CacheLabel,
    bytes: number,
    startedAt: number,
    detail?: string,
  ): void {
    const cmcdArg = query === '' ? undefined : queryArg(query, 'CMCD');
    log[level](
      {
        method: req.method,
        path,
        status,
        cache,
        bytes,
        ms: Date.now() - startedAt,
        cmcd: parseCmcd(cmcdArg, req.headers),
        remote: req.socket.remoteAddress,
        ...(detail ? { detail } : {}),
      },
      'request',
    );
  }

  function refuse(req: IncomingMessage, res: ServerResponse, path: string, query: string, status: number, text: string, extra: OutgoingHttpHeaders = {}): void {
    if (draining) res.shouldKeepAlive = false;
    sendText(res, status, text, { 'x-edge-id': id, ...(extra as Record<string, string>) });
    metrics.count('NONE', status, 0);
    if (logHits) accessLog('debug', req, path, query, status, 'NONE', 0, Date.now(), text);
  }

  function cacheStatus(lookup: Lookup): string {
    switch (lookup.outcome) {
      case 'HIT':
        return lookup.entry.kind === 'missing' ? `${cacheStatusName}; hit; detail=negative` : `${cacheStatusName}; hit`;
      case 'COALESCED':
        return `${cacheStatusName}; fwd=miss; collapsed`;
      case 'STALE':
        return `${cacheStatusName}; fwd=stale; detail=stale-if-error`;
      case 'MISS':
        return `${cacheStatusName}; fwd=${lookup.fwd}${lookup.stored ? '; stored' : ''}`;
    }
  }

  /** Everything but the plain 200 hit: misses, coalesced, stale, 304, 206, 416, negative entries. */
  function respond(
    req: IncomingMessage,
    res: ServerResponse,
    path: string,
    query: string,
    lookup: Lookup,
    range: string | undefined,
    inm: string | undefined,
    ifRange: string | undefined,
    startedAt: number,
  ): void {
    if (res.destroyed) return;
    // While draining, every response closes its connection so close() is not held by keep-alive.
    if (draining) res.shouldKeepAlive = false;
    const { entry, outcome } = lookup;
    const head = req.method === 'HEAD';
    const level = outcome === 'HIT' ? 'debug' : 'info';
    const common = { 'x-edge-id': id, 'x-cache': outcome, 'cache-status': cacheStatus(lookup) };
    if (entry.kind === 'missing') {
      const body = `not found: ${path}\n`;
      res.writeHead(404, {
        'content-type': 'text/plain; charset=utf-8',
        'content-length': Buffer.byteLength(body),
        'cache-control': negativeCacheControl,
        age: String(ageSec(entry, Date.now())),
        ...common,
      });
      res.end(head ? undefined : body);
      metrics.count(outcome, 404, 0);
      if (level === 'info' || logHits) accessLog(level, req, path, query, 404, outcome, 0, startedAt);
      return;
    }
    const now = Date.now();
    const base = { ...hitHeaders(entry, now), ...common };
    let status = 200;
    let body: Buffer | undefined = entry.body;
    let headers: OutgoingHttpHeaders = base;
    if (inm !== undefined && etagMatches(inm, entry.etag)) {
      status = 304;
      body = undefined;
      headers = notModifiedHeaders(base);
    } else if (range !== undefined && (ifRange === undefined || ifRange.trim() === entry.etag)) {
      const span = parseRange(range, entry.body.length);
      if (span === 'unsatisfiable') {
        status = 416;
        body = undefined;
        headers = { ...common, 'content-range': `bytes */${entry.body.length}`, 'content-length': '0', 'accept-ranges': 'bytes', etag: entry.etag };
      } else if (span !== undefined) {
        status = 206;
        body = entry.body.subarray(span.start, span.end + 1);
        headers = { ...base, 'content-length': String(body.length), 'content-range': `bytes ${span.start}-${span.end}/${entry.body.length}` };
      }
    }
    res.writeHead(status, headers);
    const sent = head || body === undefined ? 0 : body.length;
    if (sent === 0) res.end();
    else res.end(body);
    metrics.count(outcome, status, sent);
    if (level === 'info' || logHits)
      accessLog(level, req, path, query, status, outcome, sent, startedAt, lookup.error ? describeError(lookup.error) : undefined);
  }

  function upstreamFailed(req: IncomingMessage, res: ServerResponse, path: string, query: string, err: unknown, startedAt: number): void {
    if (res.destroyed) return;
    if (draining) res.shouldKeepAlive = false;
    const timeout = isOcdnError(err, ErrorCodes.ORIGIN_TIMEOUT);
    const status = timeout ? 504 : 502;
    const why = describeError(err).replace(/\s+/g, ' ');
    sendText(res, status, `${timeout ? 'gateway timeout' : 'bad gateway'}: ${why}`, {
      'x-edge-id': id,
      'x-cache': 'MISS',
      'cache-status': `${cacheStatusName}; fwd=miss; detail=${timeout ? 'upstream-timeout' : 'upstream-error'}`,
    });
    metrics.count('MISS', status, 0);
    accessLog('info', req, path, query, status, 'MISS', 0, startedAt, why);
  }

  function onSlowDone(): void {
    inFlight--;
  }

  // ---- /vod ------------------------------------------------------------------------------

  function serveVod(req: IncomingMessage, res: ServerResponse, url: string): void {
    const q = url.indexOf('?');
    const path = q === -1 ? url : url.slice(0, q);
    const query = q === -1 ? '' : url.slice(q + 1);
    // Only checked paths are ever stored, so a fresh entry vouches for its path: the hit path
    // skips the regex and one map lookup serves as both check and cache probe.
    const entry = edgeCache.fresh(path);
    if (entry === undefined) {
      const bad = checkPath(path);
      if (bad !== undefined) return refuse(req, res, path.slice(0, 200), query, 400, `bad request: ${bad}`);
    }
    const method = req.method;
    if (method !== 'GET' && method !== 'HEAD') return refuse(req, res, path, query, 405, `method ${method} not allowed`, { allow: 'GET, HEAD' });
    if (tokens !== null) {
      const why = tokens.check(path, q === -1 ? undefined : queryArg(query, 'token'));
      if (why !== undefined) return refuse(req, res, path, query, 403, `forbidden: ${why}`);
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
      res.writeHead(200, hitHeaders(entry, Date.now()));
      if (method === 'HEAD') {
        res.end();
        metrics.count('HIT', 200, 0);
      } else {
        res.end(entry.body);
        metrics.count('HIT', 200, entry.body.length);
      }
      if (logHits) accessLog('debug', req, path, query, 200, 'HIT', method === 'HEAD' ? 0 : entry.body.length, Date.now());
      return;
    }
    const startedAt = Date.now();
    if (entry !== undefined) return respond(req, res, path, query, { entry, outcome: 'HIT', stored: false, fwd: 'miss' }, range, inm, ifRange, startedAt);
    inFlight++;
    res.once('close', onSlowDone);
    edgeCache
      .lookup(path)
      .then(
        (lookup) => respond(req, res, path, query, lookup, range, inm, ifRange, startedAt),
        (err: unknown) => upstreamFailed(req, res, path, query, err, startedAt),
      )
      .catch((err: unknown) => {
        log.error({ err: describeError(err), path }, 'response failed');
        if (!res.headersSent) sendText(res, 500, 'internal error');
        else res.destroy();
      });
  }

  // ---- readiness -------------------------------------------------------------------------

  let readiness: { at: number; ok: boolean; reason?: string } | undefined;
  let probing: Promise<void> | undefined;
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

  async function serveOther(req: IncomingMessage, res: ServerResponse, url: string): Promise<void> {
    const q = url.indexOf('?');
    const path = q === -1 ? url : url.slice(0, q);
    if (path === '/healthz') return sendJson(res, 200, { ok: true, id, draining });
    if (path === '/readyz') {
      const r = await checkReady();
      return sendJson(res, r.ok ? 200 : 503, { ready: r.ok, id, upstream: upstream.kind, ...(r.reason ? { reason: r.reason } : {}) });
    }
    if (path === '/metrics') return sendMetrics(res, metrics.registry);
    if (path === '/admin' || path.startsWith('/admin/')) return admin.handle(req, res, path);
    return sendText(res, 404, `not found: ${path.slice(0, 200)} (this edge serves /vod/...)`, { 'x-edge-id': id });
  }

  const server = createServer(
    {
      headersTimeout: opts.headersTimeoutMs ?? 10_000,
      requestTimeout: opts.requestTimeoutMs ?? 30_000,
      maxHeaderSize: opts.maxHeaderSize ?? 16_384,
      // How often Node looks for connections past headersTimeout/requestTimeout.
      connectionsCheckingInterval: Math.min(1_000, opts.headersTimeoutMs ?? 1_000),
    },
    (req, res) => {
      const url = req.url ?? '/';
      if (url.startsWith('/vod')) return serveVod(req, res, url);
      if (isCatalogRequest(url))
        return serveCatalog(req, res, { id, cache: edgeCache, metrics, cacheStatusName, log, draining: () => draining, waiting: (d) => (inFlight += d) });
      if (draining) res.shouldKeepAlive = false;
      serveOther(req, res, url).catch((err: unknown) => {
        log.error({ err: describeError(err), url: url.slice(0, 200) }, 'request failed');
        if (!res.headersSent) sendText(res, 500, `internal error: ${describeError(err)}`);
        else res.destroy();
      });
    },
  );
  server.keepAliveTimeout = opts.keepAliveTimeoutMs ?? 5_000;
  server.maxHeadersCount = 100;
  // Clients that stop reading a response (slow-read) are cut by a periodic sweep rather than
  // server.timeout: a socket timeout re-arms timers on every request and write, a cost the hit
  // path pays per request; the sweep costs one pass over open sockets per interval.
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  const lastWritten = new WeakMap<Socket, number>();
  const stallMs = opts.stalledWriteTimeoutMs ?? 60_000;
  const sweep = setInterval(() => {
    for (const s of sockets) {
      const written = s.bytesWritten;
      // Output pending and not one more byte accepted by the kernel since the last sweep.
      if (s.writableLength > 0 && lastWritten.get(s) === written) s.destroy();
      else lastWritten.set(s, written);
    }
  }, stallMs);
  sweep.unref();

  const port = await listen(server, opts.port ?? 0, host);
  const url = `http://${host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host}:${port}`;
  const publicUrl = (opts.publicUrl ?? url).replace(/\/+$/, '');

  // ---- heartbeat -------------------------------------------------------------------------

  let last = { at: Date.now(), requests: 0, bytes: 0 };
  const buildHeartbeat = (healthy: boolean): EdgeHeartbeat => {
    const now = Date.now();
    const dt = Math.max(0.001, (now - last.at) / 1000);
    const hb: EdgeHeartbeat = {
      id,
      url: publicUrl,
      region: opts.region,
      capacityBytes: opts.capacityBytes,
      usedBytes: edgeCache.bytes,
      inFlight,
      rps: Math.round(((metrics.requestCount - last.requests) / dt) * 10) / 10,
      egressBps: Math.round(((metrics.bytesServed - last.bytes) * 8) / dt),
      healthy,
      titles: edgeCache.titles(),
      ts: now,
      ...(opts.parentUrl ? { parent: opts.parentUrl } : {}),
    };
    last = { at: now, requests: metrics.requestCount, bytes: metrics.bytesServed };
    return hb;
  };
  const steeringUrls = (typeof opts.steeringUrl === 'string' ? opts.steeringUrl.split(',') : (opts.steeringUrl ?? []))
    .map((u) => u.trim().replace(/\/+$/, ''))
    .filter(Boolean);
  const heartbeat = steeringUrls.length
    ? new Heartbeat({ steeringUrls, intervalMs: opts.heartbeatIntervalMs ?? 1_000, build: () => buildHeartbeat(!draining), log })
    : undefined;
  heartbeat?.start();

  log.info(
    {
      id,
      url,
      publicUrl,
      port,
      region: opts.region,
      capacityBytes: opts.capacityBytes,
      upstream: upstream.kind,
      parent: opts.parentUrl,
      steering: steeringUrls,
      tokens: tokens !== null,
      accessLog: logHits ? 'all requests (debug)' : 'non-hits (info); hits at debug',
    },
    'edge listening',
  );

  let closing: Promise<void> | undefined;
  return {
    id,
    url,
    port,
    registry: metrics.registry,
    cache: edgeCache,
    metrics,
    server,
    get inFlight() {
      return inFlight;
    },
    close() {
      closing ??= (async () => {
        draining = true;
        admin.close();
        await heartbeat?.stop(buildHeartbeat(false));
        await closeServer(server, opts.drainTimeoutMs ?? 10_000);
        clearInterval(sweep);
        await upstream.close();
        log.info({ id }, 'edge closed');
      })();
      return closing;
    },
  };
}

/** A 304 carries the validators and caching headers of the 200 it stands for, no body headers. */
function notModifiedHeaders(base: OutgoingHttpHeaders): OutgoingHttpHeaders {
  const { 'content-length': _l, 'content-type': _t, ...rest } = base;
  return rest;
}

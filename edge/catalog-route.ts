import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { CATALOG_KEY } from '../common/contracts.ts';
import { describeError, ErrorCodes, isOcdnError, OcdnError } from '../common/errors.ts';
import { sendError, sendMethodNotAllowed } from '../common/http.ts';
import type { Logger } from '../common/log.ts';
import type { EdgeCache, Lookup } from './cache.ts';
import { cacheStatusOf, hitHeaders } from './entry.ts';
import type { EdgeMetrics } from './metrics.ts';
import { etagMatches, parseRange } from './range.ts';

/** The one non-/vod object an edge serves: the origin's catalog.json, at the same name. */
export const CATALOG_PATH = `/${CATALOG_KEY}`;

export interface CatalogRouteDeps {
  id: string;
  cache: EdgeCache;
  metrics: EdgeMetrics;
  cacheStatusName: string;
  log: Logger;
  draining: () => boolean;
  /** Counts the request in the edge's in-flight figure while it waits on upstream (+1, then -1). */
  waiting: (delta: 1 | -1) => void;
}

/**
 * GET|HEAD /catalog.json: what players without steering pick titles from. It goes through the
 * edge cache like a playlist (same TTL, coalesced fills, stale-if-error) and needs no token: it
 * lists titles, not content bytes. If-None-Match (a player re-reading it costs a 304) and one
 * byte range are honoured, as on /vod.
 */
export function serveCatalog(req: IncomingMessage, res: ServerResponse, deps: CatalogRouteDeps): void {
  answer(req, res, deps).catch((err: unknown) => {
    deps.log.error({ err: describeError(err), path: CATALOG_PATH }, 'response failed');
    if (!res.headersSent) sendError(res, new OcdnError(ErrorCodes.INTERNAL, 'internal error'));
    else res.destroy();
  });
}

async function answer(req: IncomingMessage, res: ServerResponse, deps: CatalogRouteDeps): Promise<void> {
  const { id, cache, metrics } = deps;
  if (deps.draining()) res.shouldKeepAlive = false;
  const method = req.method;
  if (method !== 'GET' && method !== 'HEAD') {
    sendMethodNotAllowed(res, method, 'GET, HEAD', { 'x-edge-id': id });
    metrics.count('NONE', 405);
    return;
  }
  const fresh = cache.fresh(CATALOG_PATH);
  let lookup: Lookup;
  if (fresh !== undefined) lookup = { entry: fresh, outcome: 'HIT', stored: false, fwd: 'miss' };
  else {
    deps.waiting(1);
    try {
      lookup = await cache.lookup(CATALOG_PATH);
    } catch (err) {
      return upstreamFailed(res, deps, err);
    } finally {
      deps.waiting(-1);
    }
  }
  // The client left while the catalog was being fetched: nginx's 499, counted like any answer.
  if (res.destroyed) return void metrics.count(lookup.outcome, 499);
  const { entry, outcome } = lookup;
  const marks = { 'x-edge-id': id, 'x-cache': outcome, 'cache-status': cacheStatusOf(deps.cacheStatusName, lookup) };
  if (entry.kind === 'missing') {
    sendError(res, new OcdnError(ErrorCodes.NOT_FOUND, `not found: ${CATALOG_PATH} (the origin holds no catalog yet: seed content first)`), marks);
    metrics.count(outcome, 404);
    return;
  }
  const headers: OutgoingHttpHeaders = { ...hitHeaders(entry, Date.now()), ...marks };
  const inm = req.headers['if-none-match'];
  if (typeof inm === 'string' && etagMatches(inm, entry.etag)) {
    const { 'content-length': _l, 'content-type': _t, ...notModified } = headers;
    res.writeHead(304, notModified);
    res.end();
    metrics.count(outcome, 304);
    return;
  }
  let status = 200;
  let body = entry.body;
  const range = req.headers.range;
  const ifRange = req.headers['if-range'] as string | undefined;
  if (typeof range === 'string' && (ifRange === undefined || ifRange.trim() === entry.etag)) {
    const span = parseRange(range, entry.body.length);
    if (span === 'unsatisfiable') {
      sendError(res, new OcdnError(ErrorCodes.RANGE_NOT_SATISFIABLE, 'range not satisfiable'), { ...marks, 'content-range': `bytes */${entry.body.length}` });
      metrics.count(outcome, 416);
      return;
    }
    if (span !== undefined) {
      status = 206;
      body = entry.body.subarray(span.start, span.end + 1);
      headers['content-length'] = String(body.length);
      headers['content-range'] = `bytes ${span.start}-${span.end}/${entry.body.length}`;
    }
  }
  res.writeHead(status, headers);
  const sent = method === 'HEAD' ? 0 : body.length;
  res.end(sent === 0 ? undefined : body);
  metrics.count(outcome, status);
}

function upstreamFailed(res: ServerResponse, deps: CatalogRouteDeps, err: unknown): void {
  const timeout = isOcdnError(err, ErrorCodes.ORIGIN_TIMEOUT);
  const status = timeout ? 504 : 502;
  const why = describeError(err).replace(/\s+/g, ' ');
  deps.log.info({ path: CATALOG_PATH, status: res.destroyed ? 499 : status, detail: why }, 'request');
  if (res.destroyed) return void deps.metrics.count('MISS', 499);
  sendError(res, new OcdnError(timeout ? ErrorCodes.ORIGIN_TIMEOUT : ErrorCodes.ORIGIN_UNAVAILABLE, `${timeout ? 'gateway timeout' : 'bad gateway'}: ${why}`), {
    'x-edge-id': deps.id,
    'x-cache': 'MISS',
    'cache-status': `${deps.cacheStatusName}; fwd=miss; detail=${timeout ? 'upstream-timeout' : 'upstream-error'}`,
  });
  deps.metrics.count('MISS', status);
}

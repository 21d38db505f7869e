import type { IncomingMessage, ServerResponse } from 'node:http';
import { ErrorCodes, OcdnError } from '../common/errors.ts';
import { etagMatches } from '../edge/range.ts';
import type { TitleCatalog } from './catalog.ts';

/** max-age when the catalog is never re-read (static catalog): it cannot change, but a player may outlive steering. */
const STATIC_MAX_AGE_SEC = 60;

/**
 * GET|HEAD /v1/catalog: the catalog steering answers for, in the shape of catalog.json
 * (common/contracts.ts Catalog), so players pick titles from the CDN side and never need the
 * bucket. Cacheable for one refresh interval: a copy older than that may miss new titles.
 * Before the first load it throws ORIGIN_UNAVAILABLE, which the server answers 503 with the reason.
 */
export function serveCatalog(req: IncomingMessage, res: ServerResponse, catalog: TitleCatalog): void {
  const doc = catalog.document;
  if (doc === undefined) throw new OcdnError(ErrorCodes.NOT_READY, `title catalog unavailable: ${catalog.error ?? 'not loaded yet'}`);
  const refreshMs = catalog.refreshIntervalMs;
  const maxAge = refreshMs > 0 ? Math.max(1, Math.floor(refreshMs / 1000)) : STATIC_MAX_AGE_SEC;
  const headers = { etag: doc.etag, 'cache-control': `public, max-age=${maxAge}` };
  const inm = req.headers['if-none-match'];
  if (typeof inm === 'string' && etagMatches(inm, doc.etag)) {
    res.writeHead(304, headers);
    res.end();
    return;
  }
  res.writeHead(200, { ...headers, 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(doc.body) });
  res.end(req.method === 'HEAD' ? undefined : doc.body);
}

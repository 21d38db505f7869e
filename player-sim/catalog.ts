import { request, type Dispatcher } from 'undici';
import type { Catalog } from '../common/contracts.ts';
import { describeError, ErrorCodes, OcdnError } from '../common/errors.ts';
import { parseCatalog } from '../origin/catalog.ts';

/** Where players read the title catalog: steering's /v1/catalog, or an edge's /catalog.json. Never the bucket. */
export type CatalogSource = { steering: string } | { edges: readonly string[] };

export interface FetchCatalogOptions {
  dispatcher?: Dispatcher;
  /** Per request (default 5 s). */
  timeoutMs?: number;
  /** Keep asking while the answer may change (503, 502/504, connection refused) this long (default 15 s). */
  waitMs?: number;
  /** A catalog larger than this is refused (default 16 MiB). */
  maxBytes?: number;
}

/** A failed read, and whether asking again later may help. */
class CatalogReadError extends OcdnError {
  constructor(
    message: string,
    readonly transient: boolean,
  ) {
    super(ErrorCodes.NO_EDGE, message);
  }
}

const trimBase = (u: string) => u.replace(/\/+$/, '');

/** The URLs to try, in order: steering's one, or each edge's (failover down the --edge list). */
export function catalogUrls(source: CatalogSource): string[] {
  return 'steering' in source ? [`${trimBase(source.steering)}/v1/catalog`] : source.edges.map((e) => `${trimBase(e)}/catalog.json`);
}

/** One GET, bounded in time and size. */
async function getOnce(url: string, o: Required<Omit<FetchCatalogOptions, 'dispatcher'>> & { dispatcher?: Dispatcher }): Promise<Catalog> {
  let res: Dispatcher.ResponseData;
  try {
    res = await request(url, { dispatcher: o.dispatcher, signal: AbortSignal.timeout(o.timeoutMs), headers: { accept: 'application/json' } });
  } catch (err) {
    throw new CatalogReadError(`${url}: ${describeError(err)}`, true);
  }
  const declared = Number(res.headers['content-length']);
  if (declared > o.maxBytes) {
    res.body.destroy();
    throw new OcdnError(ErrorCodes.BAD_REQUEST, `${url}: catalog of ${declared} bytes is over the ${o.maxBytes}-byte limit`);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of res.body) {
    size += (chunk as Buffer).length;
    if (size > o.maxBytes) {
      res.body.destroy();
      throw new OcdnError(ErrorCodes.BAD_REQUEST, `${url}: catalog over the ${o.maxBytes}-byte limit`);
    }
    chunks.push(chunk as Buffer);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (res.statusCode !== 200) {
    const why = text.replace(/\s+/g, ' ').trim().slice(0, 300);
    throw new CatalogReadError(
      `${url} answered ${res.statusCode}${why ? `: ${why}` : ''}`,
      res.statusCode === 502 || res.statusCode === 503 || res.statusCode === 504,
    );
  }
  try {
    return parseCatalog(text);
  } catch (err) {
    throw new OcdnError(ErrorCodes.BAD_REQUEST, `${url}: ${(err as Error).message}`);
  }
}

/**
 * The catalog from the CDN side. Each URL is tried in order; a round where every one failed
 * with something that may pass (steering still loading its catalog, an edge's origin briefly
 * away) is repeated until `waitMs`, since `npm start` launches players right after seeding.
 */
export async function fetchCatalogFrom(source: CatalogSource, opts: FetchCatalogOptions = {}): Promise<Catalog> {
  const o = { timeoutMs: 5_000, waitMs: 15_000, maxBytes: 16 << 20, ...opts };
  const urls = catalogUrls(source);
  if (urls.length === 0) throw new OcdnError(ErrorCodes.CONFIG, 'no steering or edge URL to read the catalog from');
  const deadline = Date.now() + o.waitMs;
  for (let delay = 250; ; delay = Math.min(2_000, delay * 2)) {
    const failures: string[] = [];
    let transient = false;
    for (const url of urls) {
      try {
        return await getOnce(url, o);
      } catch (err) {
        failures.push((err as Error).message);
        transient ||= err instanceof CatalogReadError && err.transient;
      }
    }
    if (!transient || Date.now() + delay > deadline) throw new OcdnError(ErrorCodes.NO_EDGE, `no title catalog: ${failures.join('; ')}`);
    await new Promise((r) => setTimeout(r, delay));
  }
}

/** Title ids by popularity rank, rank 1 first: what zipf/uniform draws index into. */
export function titlesByRank(catalog: Catalog): string[] {
  return [...catalog.titles].sort((a, b) => a.popularityRank - b.popularityRank).map((t) => t.id);
}

import type { Catalog, CatalogRendition, CatalogTitle } from '../common/contracts.ts';
import { ErrorCodes, OcdnError } from '../common/errors.ts';
import type { LadderRung } from './ladder.ts';
import { renditionBandwidth, segmentCount } from './synthetic.ts';

export const CATALOG_CONTENT_TYPE = 'application/json';
/** A title folder's master playlist, as players ask for it (an import may name its own, copied to this name). */
export const DEFAULT_MASTER = 'master.m3u8';

/** "title-0001": zero-padded so keys sort in catalog order in any bucket listing. */
export function titleId(n: number): string {
  return `title-${String(n).padStart(4, '0')}`;
}

/**
 * A synthetic title's catalog entry. Rank 1 is the most popular: title-0001 is rank 1 so a
 * Zipf draw over ranks and a listing of the bucket agree without a lookup.
 */
export function syntheticTitle(opts: { id: string; rank: number; durationSec: number; segmentSec: number; ladder: readonly LadderRung[] }): CatalogTitle {
  const renditions: CatalogRendition[] = opts.ladder.map((r) => {
    const bw = renditionBandwidth({ title: opts.id, rendition: r.name, bitrate: r.bitrate, durationSec: opts.durationSec, segmentSec: opts.segmentSec });
    return { name: r.name, bandwidth: bw.bandwidth, averageBandwidth: bw.averageBandwidth, width: r.width, height: r.height, codecs: r.codecs };
  });
  return {
    id: opts.id,
    durationSec: opts.durationSec,
    segmentSec: opts.segmentSec,
    segments: segmentCount(opts),
    popularityRank: opts.rank,
    renditions,
    mode: 'synthetic',
    container: 'ts',
  };
}

export function buildCatalog(ladder: string, titles: CatalogTitle[], generatedAt = new Date()): Catalog {
  return { version: 1, generatedAt: generatedAt.toISOString(), ladder, titles: [...titles].sort((a, b) => a.popularityRank - b.popularityRank) };
}

export function serializeCatalog(catalog: Catalog): string {
  return `${JSON.stringify(catalog, null, 2)}\n`;
}

/** Same titles, ladder and timing: what decides whether a re-seed must rewrite catalog.json. */
export function sameCatalogContent(a: Catalog, b: Catalog): boolean {
  return JSON.stringify({ ...a, generatedAt: '' }) === JSON.stringify({ ...b, generatedAt: '' });
}

/** Parses catalog.json with enough checking that a wrong file fails here, not deep in a player. */
export function parseCatalog(text: string): Catalog {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new OcdnError(ErrorCodes.BAD_REQUEST, `catalog.json is not JSON: ${(err as Error).message}`);
  }
  const c = raw as Partial<Catalog>;
  if (c?.version !== 1 || !Array.isArray(c.titles) || typeof c.ladder !== 'string') {
    throw new OcdnError(ErrorCodes.BAD_REQUEST, 'catalog.json is not an ocdn catalog (version 1 with titles[])');
  }
  for (const t of c.titles) {
    if (typeof t?.id !== 'string' || !Array.isArray(t.renditions) || !(t.durationSec > 0) || !(t.segmentSec > 0)) {
      throw new OcdnError(ErrorCodes.BAD_REQUEST, `catalog.json has a malformed title: ${JSON.stringify(t).slice(0, 120)}`);
    }
    const why = importFieldProblem(t);
    if (why) throw new OcdnError(ErrorCodes.BAD_REQUEST, `catalog.json title ${t.id.slice(0, 128)}: ${why}`);
  }
  return c as Catalog;
}

/** A relative path of safe segments with no dot segments: what a player may resolve against the title's master. */
const TITLE_RELATIVE_PATH = /^(?!\.\.?(?:\/|$))[A-Za-z0-9._-]+(?:\/(?!\.\.?(?:\/|$))[A-Za-z0-9._-]+)*$/;

/**
 * The optional fields imports add, checked because players and steering act on them: a
 * rendition URI must stay inside the title, the manifest must be the title's own.
 */
function importFieldProblem(t: CatalogTitle): string | undefined {
  if (t.layout !== undefined && t.layout !== 'segments' && t.layout !== 'byterange') return `layout must be segments or byterange`;
  for (const r of t.renditions) {
    if (r.uri !== undefined && !(typeof r.uri === 'string' && r.uri.length <= 512 && TITLE_RELATIVE_PATH.test(r.uri)))
      return `rendition ${String(r.name).slice(0, 64)} has a uri that is not a relative path inside the title`;
  }
  if (t.manifest !== undefined) {
    const m = t.manifest;
    if (m?.key !== `vod/${t.id}/hashes.json` || typeof m.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(m.sha256))
      return `manifest must be {key: "vod/${t.id}/hashes.json", sha256: <64 hex>, ...}`;
  }
  return undefined;
}

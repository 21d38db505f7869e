import { createHash, randomBytes } from 'node:crypto';
import * as HLS from 'hls-parser';
import { LRUCache } from 'lru-cache';
import { contentKeys, type CatalogTitle } from '../common/contracts.ts';
import { ErrorCodes, OcdnError } from '../common/errors.ts';
import { withPathToken } from '../common/token.ts';
import { buildMasterPlaylist, parsePlaylist } from '../origin/playlists.ts';
import type { OriginReader } from '../origin/reader.ts';
import type { RankedEdge } from './policies.ts';

/**
 * HLS Content Steering (RFC 8216bis §4.4.6.6 and §7): a per-session master playlist that lists
 * every variant once per pathway (one pathway per edge, PATHWAY-ID = edge id, absolute signed
 * URIs) with an EXT-X-CONTENT-STEERING tag pointing at a per-session steering manifest; the
 * manifest re-ranks the pathways with current health each time the player reloads it.
 *
 * Players add `_HLS_pathway` (the pathway in use) and `_HLS_throughput` (their estimate, bit/s)
 * to the manifest URL. We keep the current pathway first while it is healthy and in the best
 * tier (a pathway switch costs a cold cache and a possible stall), and move it down when the
 * player reports less throughput than the lowest variant needs.
 *
 * hls-parser 0.16 writes EXT-X-CONTENT-STEERING and the variants' PATHWAY-ID correctly but reads
 * neither back (it looks for other tag names), so `readSteeringTags` parses those two itself.
 */

export interface PlaySession {
  id: string;
  title: string;
  site: string;
  policy: string;
  /** Pathways in the master playlist, as ranked when it was made. */
  pathways: string[];
  /** Lowest variant BANDWIDTH, bit/s: below it the current pathway cannot sustain playback. */
  lowestBandwidth: number;
  createdAt: number;
  expiresAtSec: number;
  reloads: number;
  lastPathway?: string;
  lastThroughputBps?: number;
}

export function newSessionId(): string {
  return randomBytes(12).toString('base64url');
}

export const SESSION_ID_PATTERN = /^[A-Za-z0-9_-]{8,64}$/;

/** Play sessions live as long as their tokens, bounded in number (oldest dropped first). */
export class SessionStore {
  private readonly cache: LRUCache<string, PlaySession>;

  constructor(opts: { max?: number; ttlMs: number }) {
    this.cache = new LRUCache({ max: opts.max ?? 100_000, ttl: opts.ttlMs, ttlAutopurge: false });
  }

  add(s: PlaySession): void {
    this.cache.set(s.id, s);
  }

  get(id: string): PlaySession | undefined {
    return this.cache.get(id);
  }

  get size(): number {
    return this.cache.size;
  }
}

/**
 * Title master playlists from S3 (what the packager wrote), cached briefly and read once per
 * title however many sessions start at the same moment. Without a reader (static catalogs in
 * benchmarks) the master is made from the catalog's renditions instead.
 */
export class MasterSource {
  private readonly cache: LRUCache<string, HLS.types.MasterPlaylist>;
  private readonly inflight = new Map<string, Promise<HLS.types.MasterPlaylist>>();

  constructor(
    private readonly reader: OriginReader | undefined,
    opts: { ttlMs?: number; max?: number } = {},
  ) {
    this.cache = new LRUCache({ max: opts.max ?? 5_000, ttl: opts.ttlMs ?? 60_000 });
  }

  async get(title: CatalogTitle): Promise<HLS.types.MasterPlaylist> {
    const hit = this.cache.get(title.id);
    if (hit) return hit;
    let p = this.inflight.get(title.id);
    if (!p) {
      p = this.load(title).finally(() => this.inflight.delete(title.id));
      this.inflight.set(title.id, p);
    }
    const master = await p;
    this.cache.set(title.id, master);
    return master;
  }

  private async load(title: CatalogTitle): Promise<HLS.types.MasterPlaylist> {
    const text = this.reader ? verifiedBody(await this.reader.getObject(contentKeys.master(title.id))).toString('utf8') : buildMasterPlaylist(title.renditions);
    const parsed = parsePlaylist(text);
    if (!parsed.isMasterPlaylist) throw new OcdnError(ErrorCodes.BAD_PLAYLIST, `${contentKeys.master(title.id)} is a media playlist, not a master playlist`);
    const master = parsed as HLS.types.MasterPlaylist;
    if (master.variants.length === 0) throw new OcdnError(ErrorCodes.BAD_PLAYLIST, `${contentKeys.master(title.id)} has no variants`);
    return master;
  }
}

const HEX64 = /^[0-9a-f]{64}$/;

/**
 * The object's bytes when they hash to the SHA-256 its metadata declares, as an edge checks
 * every fill (edge/cache.ts): a master changed in the bucket behind the packager's back is a
 * bad upstream answer (502), not something to hand players. An object without the metadata
 * is taken as edges take it.
 */
function verifiedBody(obj: { key: string; body: Buffer; sha256: string | undefined }): Buffer {
  const declared = obj.sha256?.toLowerCase();
  if (declared === undefined || !HEX64.test(declared)) return obj.body;
  const actual = createHash('sha256').update(obj.body).digest('hex');
  if (actual !== declared)
    throw new OcdnError(
      ErrorCodes.ORIGIN_UNAVAILABLE,
      `content hash mismatch for ${obj.key}: its metadata declares ${declared.slice(0, 12)}…, its bytes hash to ${actual.slice(0, 12)}…`,
    );
  return obj.body;
}

export interface Pathway {
  id: string;
  /** Edge base URL, no trailing slash. */
  url: string;
}

/**
 * The session master: each variant of `master` once per pathway, in pathway order, with an
 * absolute URI on that pathway's edge (resolved against where the title's master lives there)
 * carrying `token`. Alternate renditions (EXT-X-MEDIA with URIs) are copied per pathway too,
 * with the pathway id appended to their GROUP-ID so every pathway is self-contained.
 */
export function buildSessionMaster(opts: {
  master: HLS.types.MasterPlaylist;
  title: string;
  pathways: readonly Pathway[];
  token: string | undefined;
  serverUri: string;
}): string {
  const { master, title, pathways, token } = opts;
  if (pathways.length === 0) throw new OcdnError(ErrorCodes.NO_EDGE, 'no pathway for the session master');
  const variants: HLS.types.Variant[] = [];
  for (const p of pathways) {
    // Resolved against the signed master URL, so every URI keeps the path token as a player's
    // own resolution of a relative URI would.
    const base = withPathToken(p.url, `/vod/${encodeURIComponent(title)}/master.m3u8`, token);
    const abs = (uri: string) => new URL(uri, base).toString();
    const renditions = <T extends HLS.types.Rendition>(list: T[]): T[] =>
      list.map((r) => new HLS.types.Rendition({ ...r, groupId: `${r.groupId}.${p.id}`, ...(r.uri ? { uri: abs(r.uri) } : {}) }) as T);
    for (const [i, v] of master.variants.entries()) {
      variants.push(
        new HLS.types.Variant({
          ...v,
          uri: abs(v.uri),
          pathwayId: p.id,
          // The same id on every pathway: what PATHWAY-CLONES' PER-VARIANT-URIS are keyed by.
          stableVariantId: stableVariantId(v, i),
          audio: renditions(v.audio),
          video: renditions(v.video),
          subtitles: renditions(v.subtitles),
          // CLOSED-CAPTIONS are in-band (no URI): the group is shared by every pathway.
          closedCaptions: v.closedCaptions,
        }),
      );
    }
  }
  const out = new HLS.types.MasterPlaylist({
    version: master.version,
    independentSegments: master.independentSegments,
    start: master.start,
    variants,
    sessionDataList: master.sessionDataList,
    sessionKeyList: master.sessionKeyList,
    contentSteering: new HLS.types.ContentSteering({ serverUri: opts.serverUri, pathwayId: pathways[0]!.id }),
  });
  return `${HLS.stringify(out)}\n`;
}

/** The variant's STABLE-VARIANT-ID: the packager's when it set one, else its place in the title master. */
export function stableVariantId(v: HLS.types.Variant, index: number): string {
  return v.stableVariantId || `v${index}`;
}

/**
 * A PATHWAY-CLONES entry (RFC 8216bis §7.2) that adds `edge` to a session as a copy of pathway
 * `baseId`. Two replacement rules, applied by clients in this order (hls.js
 * content-steering-controller performUriReplacement):
 * - PER-VARIANT-URIS: the absolute URI of every variant on the new edge, keyed by the
 *   STABLE-VARIANT-ID buildSessionMaster put on it. This is what makes a clone exact: HOST is
 *   the URI's host component only (RFC 3986 §3.2.2; hls.js sets `url.hostname`, which ignores a
 *   ":port"), so HOST alone cannot move a player to an edge on another port.
 * - HOST: the new edge's hostname, for URIs without a per-variant entry (EXT-X-MEDIA renditions:
 *   hls-parser writes no STABLE-RENDITION-ID). Exact when edges share a port, as edges on
 *   their own hosts do.
 * Tokens are in the path and cover the title on any host, so the replaced URIs need no new token.
 */
export function pathwayClone(opts: {
  master: HLS.types.MasterPlaylist;
  title: string;
  baseId: string;
  edge: Pathway;
  token: string | undefined;
}): PathwayClone {
  const base = withPathToken(opts.edge.url, `/vod/${encodeURIComponent(opts.title)}/master.m3u8`, opts.token);
  const perVariant: Record<string, string> = {};
  for (const [i, v] of opts.master.variants.entries()) perVariant[stableVariantId(v, i)] = new URL(v.uri, base).toString();
  return {
    'BASE-ID': opts.baseId,
    ID: opts.edge.id,
    'URI-REPLACEMENT': { HOST: new URL(opts.edge.url).hostname, 'PER-VARIANT-URIS': perVariant },
  };
}

/** EXT-X-CONTENT-STEERING and the PATHWAY-ID of every EXT-X-STREAM-INF, in order. */
export function readSteeringTags(text: string): { serverUri?: string; pathwayId?: string; variantPathways: string[] } {
  const out: { serverUri?: string; pathwayId?: string; variantPathways: string[] } = { variantPathways: [] };
  for (const line of text.split(/\r?\n/)) {
    if (line.startsWith('#EXT-X-CONTENT-STEERING:')) {
      const attrs = attributes(line.slice('#EXT-X-CONTENT-STEERING:'.length));
      if (attrs['SERVER-URI'] !== undefined) out.serverUri = attrs['SERVER-URI'];
      if (attrs['PATHWAY-ID'] !== undefined) out.pathwayId = attrs['PATHWAY-ID'];
    } else if (line.startsWith('#EXT-X-STREAM-INF:')) {
      out.variantPathways.push(attributes(line.slice('#EXT-X-STREAM-INF:'.length))['PATHWAY-ID'] ?? '.');
    }
  }
  return out;
}

function attributes(list: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of list.matchAll(/([A-Z0-9-]+)=("[^"]*"|[^,]*)/g)) out[m[1]!] = m[2]!.replace(/^"|"$/g, '');
  return out;
}

export interface UriReplacement {
  HOST?: string;
  PARAMS?: Record<string, string>;
  'PER-VARIANT-URIS'?: Record<string, string>;
  'PER-RENDITION-URIS'?: Record<string, string>;
}

export interface PathwayClone {
  'BASE-ID': string;
  ID: string;
  'URI-REPLACEMENT': UriReplacement;
}

export interface SteeringManifest {
  VERSION: 1;
  TTL: number;
  'RELOAD-URI': string;
  'PATHWAY-PRIORITY': string[];
  'PATHWAY-CLONES'?: PathwayClone[];
}

/**
 * The manifest's TTL, i.e. how soon players ask again. Short while the registry is settling
 * (an edge came, went or moved within the last `stableSec`) or while the player reports a
 * pathway that is out, so it follows the next change within seconds, as a rolling restart or a
 * flapping edge makes several in a row; long once steady, so that steering's load per player is
 * one small request every `stableSec`. A player that reloads at the long TTL learns of a change
 * late by at most that TTL, but it does not depend on the manifest to survive an edge failure:
 * it fails over down PATHWAY-PRIORITY on its own errors.
 */
export function manifestTtl(opts: { nowMs: number; lastChangeAtMs: number; currentOut: boolean; stableSec: number; shortSec: number }): number {
  const settling = opts.nowMs - opts.lastChangeAtMs < opts.stableSec * 1000;
  return settling || opts.currentOut ? Math.min(opts.shortSec, opts.stableSec) : opts.stableSec;
}

/**
 * PATHWAY-PRIORITY for a reload: the session's pathways that are healthy now, in the current
 * ranking's order, adjusted by what the player told us. Empty when none is healthy.
 */
export function pathwayPriority(input: {
  ranked: readonly RankedEdge[];
  sessionPathways: readonly string[];
  current?: string;
  throughputBps?: number;
  lowestBandwidth: number;
}): { priority: string[]; note: string } {
  const inSession = new Set(input.sessionPathways);
  const candidates = input.ranked.filter((r) => inSession.has(r.edge.id));
  const ids = candidates.map((r) => r.edge.id);
  const at = input.current === undefined ? -1 : ids.indexOf(input.current);
  if (at === -1 || ids.length < 2) return { priority: ids, note: at === -1 && input.current !== undefined ? 'current-pathway-out' : 'ranked' };
  const current = candidates[at]!;
  if (input.throughputBps !== undefined && input.throughputBps < input.lowestBandwidth) {
    // The player cannot sustain even the lowest variant here: offer the best other pathway first.
    const rest = ids.filter((id) => id !== input.current);
    return { priority: [rest[0]!, input.current!, ...rest.slice(1)], note: 'low-throughput' };
  }
  const tierOf = (r: RankedEdge) => r.reason.split('+')[0];
  const degraded = /overload-skip|qoe-demoted/.test(current.reason);
  if (at > 0 && !degraded && tierOf(current) === tierOf(candidates[0]!)) {
    return { priority: [input.current!, ...ids.filter((id) => id !== input.current)], note: 'sticky' };
  }
  return { priority: ids, note: 'ranked' };
}

/** `_HLS_pathway` may arrive quoted (the spec's examples show a quoted-string). */
export function hlsPathwayParam(v: string | null): string | undefined {
  if (v === null || v === '') return undefined;
  const s = v.replace(/^"|"$/g, '');
  return /^[A-Za-z0-9._-]{1,64}$/.test(s) ? s : undefined;
}

export function hlsThroughputParam(v: string | null): number | undefined {
  if (v === null || v === '') return undefined;
  const n = Number(v);
  return Number.isFinite(n) && n >= 0 ? n : undefined;
}

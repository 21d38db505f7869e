import * as HLS from 'hls-parser';
import { ErrorCodes, OcdnError } from '../common/errors.ts';

/**
 * Playlists as the session needs them: absolute URLs, byte ranges with offsets filled in,
 * init sections, start times. Anything a player could not play from is rejected here with
 * E_BAD_PLAYLIST, which the session turns into an `error` event.
 *
 * hls-parser's strict mode rejects playlists real players accept (a low EXT-X-VERSION for the
 * tags used, say), and its lenient mode accepts garbage (an EXTINF without a number becomes a
 * 0 s segment). So: lenient parse, then our own checks on what matters for playback.
 */

export interface Variant {
  /** Absolute URL of the media playlist. */
  url: string;
  /** Bits/s the ABR reasons with: AVERAGE-BANDWIDTH when present, else BANDWIDTH. */
  bitrate: number;
  /** BANDWIDTH (peak), bits/s. */
  bandwidth: number;
  /** Folder or file name of the media playlist ("3000k"), for events. */
  name: string;
}

export interface ByteRange {
  offset: number;
  length: number;
}

export interface MediaSegment {
  index: number;
  url: string;
  durationS: number;
  startS: number;
  range: ByteRange | undefined;
  /** EXT-X-MAP in effect for this segment. */
  init: { url: string; range: ByteRange | undefined } | undefined;
  discontinuity: boolean;
}

export interface MediaInfo {
  segments: MediaSegment[];
  endlist: boolean;
  totalS: number;
  targetDurationS: number;
}

export type MasterOrMedia = { kind: 'master'; variants: Variant[] } | { kind: 'media'; media: MediaInfo };

const bad = (msg: string) => new OcdnError(ErrorCodes.BAD_PLAYLIST, msg);

/** Parses are cached by text: thousands of virtual sessions read the same few playlists. */
const parseCache = new Map<string, HLS.types.MasterPlaylist | HLS.types.MediaPlaylist | OcdnError>();
const PARSE_CACHE_LIMIT = 256;

function parseCached(text: string): HLS.types.MasterPlaylist | HLS.types.MediaPlaylist {
  let hit = parseCache.get(text);
  if (hit === undefined) {
    hit = parseRaw(text);
    if (parseCache.size >= PARSE_CACHE_LIMIT) parseCache.delete(parseCache.keys().next().value!);
    parseCache.set(text, hit);
  }
  if (hit instanceof OcdnError) throw hit;
  return hit;
}

function parseRaw(text: string): HLS.types.MasterPlaylist | HLS.types.MediaPlaylist | OcdnError {
  if (!/^\uFEFF?#EXTM3U[ \t]*\r?(\n|$)/.test(text)) return bad('playlist does not start with #EXTM3U');
  const before = HLS.getOptions();
  HLS.setOptions({ strictMode: false, silent: true });
  try {
    return HLS.parse(text) as HLS.types.MasterPlaylist | HLS.types.MediaPlaylist;
  } catch (err) {
    return bad(`unparseable playlist: ${(err as Error).message}`);
  } finally {
    HLS.setOptions(before);
  }
}

/**
 * Resolves a playlist URI against the playlist's URL exactly as a standard player does
 * (`new URL(ref, base)`): nothing is carried over from the base by hand. Edge tokens live in
 * the path (common/token.ts), which relative resolution keeps; a URL that loses its token here
 * would lose it in hls.js too, and the 403 should show.
 */
export function resolveUri(uri: string, baseUrl: string): string {
  let u: URL;
  try {
    u = new URL(uri, baseUrl);
  } catch {
    throw bad(`bad URI "${uri}"`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw bad(`unsupported URI scheme in "${uri}"`);
  return u.toString();
}

function variantName(uri: string, bitrate: number): string {
  const path = uri.split(/[?#]/)[0]!;
  const parts = path.split('/').filter(Boolean);
  if (parts.length >= 2) return parts[parts.length - 2]!;
  const file = parts[parts.length - 1]?.replace(/\.m3u8$/i, '');
  return file && file !== 'index' ? file : `${Math.round(bitrate / 1000)}k`;
}

function toMedia(p: HLS.types.MediaPlaylist, baseUrl: string): MediaInfo {
  if (p.segments.length === 0) throw bad('media playlist has no segments');
  const segments: MediaSegment[] = [];
  let start = 0;
  // EXT-X-BYTERANGE without @offset continues where the previous range of the same URI ended.
  const rangeEnd = new Map<string, number>();
  for (let i = 0; i < p.segments.length; i++) {
    const s = p.segments[i]!;
    if (typeof s.uri !== 'string' || s.uri.trim() === '') throw bad(`segment ${i} has no URI`);
    if (!(typeof s.duration === 'number' && Number.isFinite(s.duration) && s.duration > 0)) throw bad(`segment ${i} has no valid EXTINF duration`);
    const url = resolveUri(s.uri, baseUrl);
    let range: ByteRange | undefined;
    if (s.byterange) {
      const length = Number(s.byterange.length);
      const offset = s.byterange.offset !== undefined ? Number(s.byterange.offset) : rangeEnd.get(url);
      if (!(Number.isInteger(length) && length > 0) || offset === undefined || !(Number.isInteger(offset) && offset >= 0)) {
        throw bad(`segment ${i} has an invalid EXT-X-BYTERANGE`);
      }
      range = { offset, length };
      rangeEnd.set(url, offset + length);
    }
    let init: MediaSegment['init'];
    if (s.map) {
      if (typeof s.map.uri !== 'string' || s.map.uri === '') throw bad(`segment ${i} has an EXT-X-MAP without URI`);
      const r = s.map.byterange;
      init = { url: resolveUri(s.map.uri, baseUrl), range: r ? { offset: Number(r.offset ?? 0), length: Number(r.length) } : undefined };
    }
    segments.push({ index: i, url, durationS: s.duration, startS: start, range, init, discontinuity: Boolean(s.discontinuity) });
    start += s.duration;
  }
  return {
    segments,
    endlist: Boolean(p.endlist),
    totalS: start,
    targetDurationS: Number(p.targetDuration) || Math.ceil(Math.max(...segments.map((s) => s.durationS))),
  };
}

/** A URL the session was told is a master playlist; a media playlist there is played as one rendition. */
export function parseMasterOrMedia(text: string, baseUrl: string): MasterOrMedia {
  const p = parseCached(text);
  if (!p.isMasterPlaylist) return { kind: 'media', media: toMedia(p, baseUrl) };
  const variants: Variant[] = [];
  for (const v of p.variants) {
    if (v.isIFrameOnly) continue;
    const bandwidth = Number(v.bandwidth);
    if (!(bandwidth > 0)) throw bad(`variant "${v.uri}" has no valid BANDWIDTH`);
    if (typeof v.uri !== 'string' || v.uri === '') throw bad('variant without URI');
    const avg = Number(v.averageBandwidth);
    const bitrate = avg > 0 ? avg : bandwidth;
    variants.push({ url: resolveUri(v.uri, baseUrl), bitrate, bandwidth, name: variantName(v.uri, bitrate) });
  }
  if (variants.length === 0) throw bad('master playlist has no playable variants');
  variants.sort((a, b) => a.bitrate - b.bitrate);
  return { kind: 'master', variants };
}

/** Resolved media playlists are shared read-only between sessions that fetched the same text from the same URL. */
const mediaCache = new Map<string, MediaInfo>();

export function parseMedia(text: string, baseUrl: string): MediaInfo {
  const key = `${baseUrl}\n${text}`;
  const hit = mediaCache.get(key);
  if (hit) return hit;
  const p = parseCached(text);
  if (p.isMasterPlaylist) throw bad('expected a media playlist, got a master playlist');
  const media = toMedia(p, baseUrl);
  if (mediaCache.size >= PARSE_CACHE_LIMIT) mediaCache.delete(mediaCache.keys().next().value!);
  mediaCache.set(key, media);
  return media;
}

/** The segment covering media time t (first whose end is past t), for switching renditions by time. */
export function segmentAt(media: MediaInfo, tS: number): MediaSegment | undefined {
  const segs = media.segments;
  let lo = 0;
  let hi = segs.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    const s = segs[mid]!;
    if (s.startS + s.durationS <= tS + 1e-6) lo = mid + 1;
    else hi = mid;
  }
  return segs[lo];
}

import * as HLS from 'hls-parser';
import type { CatalogRendition } from '../common/contracts.ts';
import { ErrorCodes, OcdnError } from '../common/errors.ts';

/**
 * Master and media playlists, written with hls-parser so what we serve is what a parser
 * reads back. URIs are relative (rendition folder, then segment file) so the same playlists
 * work from any edge host, path prefix or tokenised URL.
 */

/** EXT-X-VERSION 3: the lowest version that allows decimal EXTINF durations. */
export const HLS_VERSION = 3;

export const MASTER_FILE = 'master.m3u8';
export const MEDIA_FILE = 'index.m3u8';
export const PLAYLIST_CONTENT_TYPE = 'application/vnd.apple.mpegurl';

export function segmentFileName(index: number, ext: 'ts' | 'm4s' = 'ts'): string {
  return `seg-${String(index).padStart(5, '0')}.${ext}`;
}

export type MasterRendition = CatalogRendition & { frameRate?: number };

/** The master playlist of a title: one EXT-X-STREAM-INF per rendition, lowest first. */
export function buildMasterPlaylist(renditions: readonly MasterRendition[]): string {
  if (renditions.length === 0) throw new OcdnError(ErrorCodes.INTERNAL, 'a master playlist needs at least one rendition');
  const variants = [...renditions]
    .sort((a, b) => a.bandwidth - b.bandwidth)
    .map(
      (r) =>
        new HLS.types.Variant({
          uri: `${r.name}/${MEDIA_FILE}`,
          bandwidth: r.bandwidth,
          averageBandwidth: r.averageBandwidth,
          codecs: r.codecs,
          resolution: { width: r.width, height: r.height },
          frameRate: r.frameRate,
        }),
    );
  // Every segment starts with a key frame (synthetic: by fiat; ffmpeg: forced), which lets
  // players switch renditions at any segment boundary.
  const master = new HLS.types.MasterPlaylist({ version: HLS_VERSION, independentSegments: true, variants });
  return `${HLS.stringify(master)}\n`;
}

/** A VOD media playlist: EXT-X-PLAYLIST-TYPE:VOD and EXT-X-ENDLIST, segments numbered from 0. */
export function buildMediaPlaylist(durations: readonly number[], opts: { ext?: 'ts' | 'm4s'; uri?: (index: number) => string } = {}): string {
  if (durations.length === 0) throw new OcdnError(ErrorCodes.INTERNAL, 'a media playlist needs at least one segment');
  const uri = opts.uri ?? ((i: number) => segmentFileName(i, opts.ext));
  const playlist = new HLS.types.MediaPlaylist({
    version: HLS_VERSION,
    targetDuration: targetDuration(durations),
    mediaSequenceBase: 0,
    playlistType: 'VOD',
    endlist: true,
    segments: durations.map((duration, i) => new HLS.types.Segment({ uri: uri(i), duration, mediaSequenceNumber: i })),
  });
  return `${HLS.stringify(playlist)}\n`;
}

/** RFC 8216 §4.3.3.1: every EXTINF, rounded to the nearest integer, must be ≤ the target. */
export function targetDuration(durations: readonly number[]): number {
  return Math.max(1, ...durations.map((d) => Math.round(d)));
}

/** Parses a playlist strictly (throws on malformed input instead of logging and carrying on). */
export function parsePlaylist(text: string): HLS.types.MasterPlaylist | HLS.types.MediaPlaylist {
  const before = HLS.getOptions();
  HLS.setOptions({ strictMode: true, silent: true });
  try {
    return HLS.parse(text) as HLS.types.MasterPlaylist | HLS.types.MediaPlaylist;
  } catch (err) {
    throw new OcdnError(ErrorCodes.BAD_PLAYLIST, `invalid playlist: ${(err as Error).message}`, { cause: err });
  } finally {
    HLS.setOptions(before);
  }
}

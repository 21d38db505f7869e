/**
 * CMSD-Static (CTA-5006) of an object, written by the packager as S3 metadata because S3 itself
 * cannot emit the header; edges pass the stored value through unchanged. The value is an HTTP
 * Structured Fields Dictionary (RFC 8941): `key=value` members joined by `,`, a `true` boolean
 * written as the bare key, strings in double quotes, tokens bare (CTA-5006 §3.2:
 * "CMSD-Static … MUST be a Dictionary").
 */

/** The S3 user-metadata name (x-amz-meta-cmsd-static). */
export const CMSD_STATIC_META = 'cmsd-static';

export interface CmsdStaticFields {
  /** Object type: m manifest, a audio, v video, av muxed, i init, c caption, tt timed text, k key, o other. */
  ot?: 'm' | 'a' | 'v' | 'av' | 'i' | 'c' | 'tt' | 'k' | 'o';
  /** Encoded bitrate, kbps (media objects only). */
  br?: number;
  /** Object duration, ms (segments only). */
  d?: number;
  /** Stream type: v VOD, l live. */
  st?: 'v' | 'l';
  /** Streaming format: h HLS, d DASH. */
  sf?: 'h' | 'd' | 's' | 'o';
  /** Next object request: path relative to this object, URL-encoded. */
  nor?: string;
}

const ORDER = ['ot', 'sf', 'st', 'br', 'd', 'nor'] as const;

function sfString(s: string): string {
  return `"${s.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}

export function formatCmsdStatic(f: CmsdStaticFields): string {
  const out: string[] = [];
  for (const k of ORDER) {
    const v = f[k];
    if (v === undefined) continue;
    if (typeof v === 'number') out.push(`${k}=${Math.round(v)}`);
    else if (k === 'nor') out.push(`${k}=${sfString(v)}`);
    else out.push(`${k}=${v}`);
  }
  return out.join(',');
}

/** A VOD HLS playlist (master or media). */
export const PLAYLIST_CMSD_STATIC = formatCmsdStatic({ ot: 'm', sf: 'h', st: 'v' });

/**
 * Segment `index` of a rendition of `bitrate` bits/s, lasting `durationSec`; `nextFile` is the
 * next segment's file name in the same folder (absent for the last segment).
 */
export function segmentCmsdStatic(bitrate: number, durationSec: number, nextFile: string | undefined): string {
  return formatCmsdStatic({
    ot: 'av',
    sf: 'h',
    st: 'v',
    br: bitrate / 1000,
    d: durationSec * 1000,
    nor: nextFile === undefined ? undefined : encodeURIComponent(nextFile),
  });
}

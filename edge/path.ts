/**
 * What an edge accepts as an object path, and what it says about it. Everything a client can
 * put in the path is checked here, before the cache or the bucket ever sees it.
 */

export const MAX_PATH_LENGTH = 512;

/**
 * `/vod/{title}/{…}` made of `[A-Za-z0-9._-]` segments, none of them `.` or `..`. Percent
 * signs, backslashes and NUL are outside the class, so encoded separators (`%2f`, `%2e%2e`,
 * `%00`) are refused without ever being decoded.
 */
const SAFE_PATH = /^\/vod(?:\/(?!\.\.?(?:\/|$))[A-Za-z0-9._-]+){2,}$/;

/** undefined when the path is acceptable, else a short reason for the 400 body. */
export function checkPath(path: string): string | undefined {
  if (path.length > MAX_PATH_LENGTH) return `path longer than ${MAX_PATH_LENGTH} characters`;
  if (SAFE_PATH.test(path)) return undefined;
  if (!path.startsWith('/vod/')) return 'only /vod/{title}/... is served';
  if (path.includes('%')) return 'percent-encoded characters are not allowed in paths';
  if (/(^|\/)\.\.?(\/|$)/.test(path)) return 'dot segments are not allowed in paths';
  if (path.includes('//') || path.endsWith('/')) return 'empty path segment';
  if (path.split('/').length < 4) return 'path must name an object under /vod/{title}/';
  return 'path segments may only contain A-Z a-z 0-9 . _ -';
}

/** `/vod/{title}/…` → title (the path is already checked). */
export function titleOf(path: string): string {
  const end = path.indexOf('/', 5);
  return end === -1 ? path.slice(5) : path.slice(5, end);
}

/** Playlists, and /catalog.json: both change when content is (re)seeded, so both get the short playlist TTL. */
export function isPlaylist(path: string): boolean {
  return path.endsWith('.m3u8') || path === '/catalog.json';
}

const TYPES: Record<string, string> = {
  m3u8: 'application/vnd.apple.mpegurl',
  ts: 'video/mp2t',
  mp4: 'video/mp4',
  m4s: 'video/mp4',
  m4a: 'audio/mp4',
  aac: 'audio/aac',
  vtt: 'text/vtt; charset=utf-8',
  json: 'application/json',
};

/** By extension first (what players need); the origin's type only for extensions we do not know. */
export function contentTypeFor(path: string, originType?: string): string {
  const dot = path.lastIndexOf('.');
  const ext = dot === -1 ? '' : path.slice(dot + 1).toLowerCase();
  return TYPES[ext] ?? originType ?? 'application/octet-stream';
}

/**
 * One query argument, raw (not decoded), without building a URLSearchParams per request:
 * this runs on the hit path.
 */
export function queryArg(query: string, name: string): string | undefined {
  let i = 0;
  const n = query.length;
  while (i < n) {
    let amp = query.indexOf('&', i);
    if (amp === -1) amp = n;
    if (amp - i > name.length && query.charCodeAt(i + name.length) === 61 /* = */ && query.startsWith(name, i)) {
      return query.slice(i + name.length + 1, amp);
    }
    i = amp + 1;
  }
  return undefined;
}

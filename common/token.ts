import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * URL tokens shared by steering (signs) and edges (verifies), per DESIGN.md:
 * `<expires>.<sig>` with `sig = hex(HMAC-SHA256(secret, pathPrefix + "|" + expires))`.
 * The prefix is the title's folder (`/vod/{title}/`), so one token covers the master playlist,
 * every rendition and every segment of that title for the session.
 *
 * Steering puts the token in the path, `/t/<token>/vod/{title}/…`, not in the query: playlists
 * use relative URIs and standard resolution (`new URL(ref, base)`, RFC 3986 §5.2) keeps the
 * base's path but drops its query, so a path token reaches every media playlist, segment,
 * EXT-X-MAP and EXT-X-KEY of the title with any client (hls.js, Safari, ffmpeg) and with no
 * playlist rewriting. Edges strip the prefix before the cache, so every session shares one
 * entry. `?token=` is still accepted (older clients, hand-made URLs).
 */

export type TokenCheck =
  | { ok: true; expires: number; session?: string }
  | { ok: false; reason: 'missing' | 'malformed' | 'expired' | 'invalid-signature' | 'bad-path' };

/** `/vod/{title}/...` → `/vod/{title}/`; undefined when the path is not under a title. */
export function titlePrefix(path: string): string | undefined {
  const m = /^\/vod\/([^/]+)\//.exec(path);
  return m ? `/vod/${m[1]}/` : undefined;
}

/** A session id a token may carry: no dots, so the token's three parts split unambiguously. */
export const TOKEN_SESSION = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * `<expires>.<sig>`, or with a session `<expires>.<session>.<sig>` signed over the session too:
 * then every request of the playback names its steering session, whatever the player (hls.js
 * makes up its own CMCD sid), and no one can make requests count for another session.
 */
export function signPrefix(secret: string, prefix: string, expiresSec: number, session?: string): string {
  if (session !== undefined && !TOKEN_SESSION.test(session)) throw new Error(`a token session must match ${TOKEN_SESSION}: ${session.slice(0, 80)}`);
  const signed = session === undefined ? `${prefix}|${expiresSec}` : `${prefix}|${expiresSec}|${session}`;
  const sig = createHmac('sha256', secret).update(signed).digest('hex');
  return session === undefined ? `${expiresSec}.${sig}` : `${expiresSec}.${session}.${sig}`;
}

/** The session a token names (unverified: the edge has verified it before serving, when tokens are on). */
export function sessionOfToken(token: string): string | undefined {
  const a = token.indexOf('.');
  const b = token.lastIndexOf('.');
  if (a === b) return undefined;
  const session = token.slice(a + 1, b);
  return TOKEN_SESSION.test(session) ? session : undefined;
}

/** Signs `path` (any path under the title) valid until `expiresSec` (unix seconds). */
export function signPath(secret: string, path: string, expiresSec: number): string {
  const prefix = titlePrefix(path);
  if (!prefix) throw new Error(`cannot sign a path outside /vod/{title}/: ${path}`);
  return signPrefix(secret, prefix, expiresSec);
}

/** Appends the token to a URL or path that may already carry a query (the query form: see above). */
export function withToken(url: string, token: string): string {
  return `${url}${url.includes('?') ? '&' : '?'}token=${token}`;
}

export const PATH_TOKEN_PREFIX = '/t/';

/** `/vod/{title}/…` → `/t/<token>/vod/{title}/…`; the path itself when there is no token (tokens off). */
export function tokenPath(path: string, token: string | undefined): string {
  return token === undefined ? path : `${PATH_TOKEN_PREFIX}${token}${path}`;
}

/** An edge's base URL (no trailing slash) and an object path → the signed URL players are given. */
export function withPathToken(baseUrl: string, path: string, token: string | undefined): string {
  return `${baseUrl}${tokenPath(path, token)}`;
}

export type PathTokenSplit = { ok: true; token: string | undefined; path: string } | { ok: false; reason: string };

const TOKEN_SEGMENT = /^[A-Za-z0-9._-]{1,160}$/;

/**
 * A request path → its token and the object path (the cache key). Paths without the `/t/`
 * prefix come back as they are, token undefined. Only the shape is checked here (one bounded
 * segment of the path alphabet, then `/…`): the token itself is `verifyToken`'s, and the rest
 * still goes through the edge's path allow-list. Runs on the hit path: no regex unless prefixed.
 */
export function splitPathToken(path: string): PathTokenSplit {
  if (!path.startsWith(PATH_TOKEN_PREFIX)) return { ok: true, token: undefined, path };
  const end = path.indexOf('/', PATH_TOKEN_PREFIX.length);
  if (end === -1) return { ok: false, reason: 'malformed path token: expected /t/<expires>.<signature>/vod/{title}/...' };
  const token = path.slice(PATH_TOKEN_PREFIX.length, end);
  if (!TOKEN_SEGMENT.test(token)) return { ok: false, reason: 'malformed path token (expected /t/<expires>[.<session>].<64 hex>/...)' };
  return { ok: true, token, path: path.slice(end) };
}

export function verifyToken(secret: string, path: string, token: string | null | undefined, nowSec = Date.now() / 1000): TokenCheck {
  if (!token) return { ok: false, reason: 'missing' };
  const m = /^(\d{1,12})(?:\.([A-Za-z0-9_-]{1,64}))?\.([0-9a-f]{64})$/.exec(token);
  if (!m) return { ok: false, reason: 'malformed' };
  const prefix = titlePrefix(path);
  if (!prefix) return { ok: false, reason: 'bad-path' };
  const expires = Number(m[1]);
  const session = m[2];
  const expected = createHmac('sha256', secret)
    .update(session === undefined ? `${prefix}|${expires}` : `${prefix}|${expires}|${session}`)
    .digest();
  const given = Buffer.from(m[3]!, 'hex');
  // Check the signature before expiry so a forged token never learns whether its time was right.
  if (!timingSafeEqual(expected, given)) return { ok: false, reason: 'invalid-signature' };
  if (expires < nowSec) return { ok: false, reason: 'expired' };
  return session === undefined ? { ok: true, expires } : { ok: true, expires, session };
}

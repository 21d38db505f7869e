import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * URL tokens shared by steering (signs) and edges (verifies), per DESIGN.md:
 * `?token=<expires>.<sig>` with `sig = hex(HMAC-SHA256(secret, pathPrefix + "|" + expires))`.
 * The prefix is the title's folder (`/vod/{title}/`), so one token covers the master playlist,
 * every rendition and every segment of that title for the session.
 */

export type TokenCheck = { ok: true; expires: number } | { ok: false; reason: 'missing' | 'malformed' | 'expired' | 'invalid-signature' | 'bad-path' };

/** `/vod/{title}/...` → `/vod/{title}/`; undefined when the path is not under a title. */
export function titlePrefix(path: string): string | undefined {
  const m = /^\/vod\/([^/]+)\//.exec(path);
  return m ? `/vod/${m[1]}/` : undefined;
}

export function signPrefix(secret: string, prefix: string, expiresSec: number): string {
  const sig = createHmac('sha256', secret).update(`${prefix}|${expiresSec}`).digest('hex');
  return `${expiresSec}.${sig}`;
}

/** Signs `path` (any path under the title) valid until `expiresSec` (unix seconds). */
export function signPath(secret: string, path: string, expiresSec: number): string {
  const prefix = titlePrefix(path);
  if (!prefix) throw new Error(`cannot sign a path outside /vod/{title}/: ${path}`);
  return signPrefix(secret, prefix, expiresSec);
}

/** Appends the token to a URL or path that may already carry a query. */
export function withToken(url: string, token: string): string {
  return `${url}${url.includes('?') ? '&' : '?'}token=${token}`;
}

export function verifyToken(secret: string, path: string, token: string | null | undefined, nowSec = Date.now() / 1000): TokenCheck {
  if (!token) return { ok: false, reason: 'missing' };
  const m = /^(\d{1,12})\.([0-9a-f]{64})$/.exec(token);
  if (!m) return { ok: false, reason: 'malformed' };
  const prefix = titlePrefix(path);
  if (!prefix) return { ok: false, reason: 'bad-path' };
  const expires = Number(m[1]);
  const expected = createHmac('sha256', secret).update(`${prefix}|${expires}`).digest();
  const given = Buffer.from(m[2]!, 'hex');
  // Check the signature before expiry so a forged token never learns whether its time was right.
  if (!timingSafeEqual(expected, given)) return { ok: false, reason: 'invalid-signature' };
  if (expires < nowSec) return { ok: false, reason: 'expired' };
  return { ok: true, expires };
}

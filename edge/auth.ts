import { createHash, timingSafeEqual } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { verifyToken } from '../common/token.ts';
import { titleOf } from './path.ts';

const REASONS = {
  missing: 'missing token (/t/<expires>.<signature>/vod/... or ?token=<expires>.<signature>)',
  malformed: 'malformed token (expected <expires>.<64 hex> or <expires>.<session>.<64 hex>)',
  expired: 'token expired',
  'invalid-signature': 'invalid token signature',
  'bad-path': 'token does not cover this path',
} as const;

/**
 * URL tokens on the request path. A player sends the same token on every segment of a title,
 * so a successful check is remembered (token + title → expiry) and the HMAC runs once per
 * session and title rather than once per request. Failures are never remembered.
 */
export class TokenGate {
  private readonly verified = new LRUCache<string, number>({ max: 20_000 });

  constructor(private readonly secret: string) {}

  /** undefined when allowed, else the reason for the 403 body. */
  check(path: string, token: string | undefined, nowMs = Date.now()): string | undefined {
    if (token === undefined || token === '') return REASONS.missing;
    const memoKey = `${titleOf(path)}|${token}`;
    const expires = this.verified.get(memoKey);
    if (expires !== undefined) return expires * 1000 >= nowMs ? undefined : REASONS.expired;
    const r = verifyToken(this.secret, path, token, nowMs / 1000);
    if (!r.ok) return REASONS[r.reason];
    this.verified.set(memoKey, r.expires);
    return undefined;
  }
}

/** Constant-time comparison of `Authorization: Bearer <token>` against the admin token. */
export function bearerMatches(header: string | undefined, adminToken: string): boolean {
  if (header === undefined) return false;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  if (!m) return false;
  const a = createHash('sha256').update(m[1]!).digest();
  const b = createHash('sha256').update(adminToken).digest();
  return timingSafeEqual(a, b);
}

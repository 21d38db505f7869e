/**
 * Who may use the console. The admin token never leaves this process: whoever holds it (the
 * CLI, through the cluster's cluster.json) mints one-time login tokens; a browser spends one at
 * `/?login=<token>` for an HttpOnly, SameSite=Strict session cookie, and every state-changing
 * call also carries the session's CSRF token in a header, which a cross-site page cannot read.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { LRUCache } from 'lru-cache';
import { ErrorCodes, OcdnError } from '../common/errors.ts';

export const SESSION_COOKIE = 'ocdn_console';
export const CSRF_HEADER = 'x-csrf-token';

export interface AuthOptions {
  adminToken: string;
  /** How long a minted login token may wait for its one use (default 1 h). */
  loginTtlMs?: number;
  /** Session lifetime from login (default 12 h). */
  sessionTtlMs?: number;
  /** Unspent login tokens kept; past it the oldest is forgotten (default 64). */
  maxLoginTokens?: number;
  /** Sessions kept; past it the least recently used is logged out (default 1,000). */
  maxSessions?: number;
  now?: () => number;
}

export interface Session {
  id: string;
  csrfToken: string;
  expiresAt: number;
}

const token = () => randomBytes(32).toString('base64url');
// Hashes have one length, so timingSafeEqual never throws and the comparison leaks nothing.
const digest = (s: string) => createHash('sha256').update(s).digest();
const sameSecret = (a: string, b: string) => timingSafeEqual(digest(a), digest(b));

export class ConsoleAuth {
  private readonly logins: LRUCache<string, { expiresAt: number }>;
  private readonly sessions: LRUCache<string, Session>;
  private readonly now: () => number;
  readonly loginTtlMs: number;
  readonly sessionTtlMs: number;

  constructor(private readonly o: AuthOptions) {
    this.now = o.now ?? Date.now;
    this.loginTtlMs = o.loginTtlMs ?? 3_600_000;
    this.sessionTtlMs = o.sessionTtlMs ?? 12 * 3_600_000;
    // Keyed by a hash of the token, so a heap dump holds no usable login token.
    this.logins = new LRUCache({ max: o.maxLoginTokens ?? 64 });
    this.sessions = new LRUCache({ max: o.maxSessions ?? 1_000 });
  }

  /** Sessions held (bounded by maxSessions; expired ones go when next seen or pushed out). */
  get sessionCount(): number {
    return this.sessions.size;
  }

  /** True when `req` carries `Authorization: Bearer <admin token>`. */
  isAdmin(req: IncomingMessage): boolean {
    const m = /^Bearer\s+(\S+)$/i.exec(String(req.headers.authorization ?? ''));
    return m !== null && sameSecret(m[1]!, this.o.adminToken);
  }

  mintLogin(): { token: string; expiresAt: number } {
    const t = token();
    const expiresAt = this.now() + this.loginTtlMs;
    this.logins.set(digest(t).toString('hex'), { expiresAt });
    return { token: t, expiresAt };
  }

  /** Spends a login token: a new session, or E_FORBIDDEN when it is unknown, expired or already used. */
  login(loginToken: string): Session {
    const key = digest(loginToken).toString('hex');
    const entry = this.logins.get(key);
    this.logins.delete(key);
    if (!entry || entry.expiresAt <= this.now())
      throw new OcdnError(
        ErrorCodes.FORBIDDEN,
        'login token unknown, expired or already used: each works once; "ocdn console url" prints a new one (or see "ocdn cluster status")',
      );
    const s: Session = { id: token(), csrfToken: token(), expiresAt: this.now() + this.sessionTtlMs };
    this.sessions.set(digest(s.id).toString('hex'), s);
    return s;
  }

  /** The request's session: E_UNAUTHORIZED without a live one. */
  session(req: IncomingMessage): Session {
    const id = cookieValue(req.headers.cookie, SESSION_COOKIE);
    const key = id === undefined ? undefined : digest(id).toString('hex');
    const s = key === undefined ? undefined : this.sessions.get(key);
    if (!s || s.expiresAt <= this.now()) {
      if (key !== undefined) this.sessions.delete(key);
      throw new OcdnError(ErrorCodes.UNAUTHORIZED, 'not logged in to the console: open the login URL "ocdn console url" prints');
    }
    return s;
  }

  /** The session of a state-changing request: its cookie and, in the X-CSRF-Token header, its CSRF token. */
  sessionWithCsrf(req: IncomingMessage): Session {
    const s = this.session(req);
    const sent = req.headers[CSRF_HEADER];
    if (typeof sent !== 'string' || !sameSecret(sent, s.csrfToken))
      throw new OcdnError(ErrorCodes.FORBIDDEN, `missing or wrong ${CSRF_HEADER} header: take it from GET /api/session`);
    return s;
  }

  logout(req: IncomingMessage): void {
    const id = cookieValue(req.headers.cookie, SESSION_COOKIE);
    if (id !== undefined) this.sessions.delete(digest(id).toString('hex'));
  }

  sessionCookie(s: Session, secure: boolean): string {
    const maxAge = Math.max(0, Math.floor((s.expiresAt - this.now()) / 1000));
    return `${SESSION_COOKIE}=${s.id}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${maxAge}${secure ? '; Secure' : ''}`;
  }
}

/** One cookie's value from a Cookie header (RFC 6265 §5.4: `name=value` pairs split by `; `). */
export function cookieValue(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const i = part.indexOf('=');
    if (i === -1) continue;
    if (part.slice(0, i).trim() === name) return part.slice(i + 1).trim();
  }
  return undefined;
}

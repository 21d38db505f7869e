import type { IncomingMessage, OutgoingHttpHeader, OutgoingHttpHeaders } from 'node:http';
import { ErrorCodes, OcdnError } from './errors.ts';

/**
 * Browser-grade CORS (DESIGN.md "Edge HTTP"): hls.js on a page of another origin reads
 * playlists, segments, steering answers and our cache headers, and sends Range and CMCD-*
 * headers, which need a preflight. One policy per server; common/http-server.ts applies it to
 * every answer, so no route has to remember it.
 */

/** What a page may read besides the CORS-safelisted response headers. */
export const CORS_EXPOSE_HEADERS = 'X-Edge-Id, X-Cache, Cache-Status, Age, Content-Range, CMSD-Static, CMSD-Dynamic';
/** Request headers a player sends that are not CORS-safelisted (Range with a non-simple value, CMCD in header mode). */
export const CORS_ALLOW_HEADERS = 'Range, If-None-Match, If-Range, Content-Type, CMCD-Request, CMCD-Object, CMCD-Status, CMCD-Session';
/** A day: Chromium caps it at 2 h and Firefox at 24 h, so browsers preflight once per their own cap. */
export const CORS_MAX_AGE_SEC = 86_400;

/** `'*'`: any page; else the exact origins (`scheme://host[:port]`) allowed to read answers. */
export type CorsOrigins = '*' | readonly string[];

/**
 * `--cors-origins`: `*`, or a comma-separated list of origins. An entry must be an origin as a
 * browser sends it (no path, no trailing slash): anything else could never match an Origin
 * header, and a typo that silently blocks every page is worse than a refusal to start.
 */
export function parseCorsOrigins(value: string | readonly string[]): CorsOrigins {
  const list = (typeof value === 'string' ? value.split(',') : value).map((s) => s.trim()).filter(Boolean);
  if (list.length === 0) throw new OcdnError(ErrorCodes.CONFIG, "CORS origins: give '*' (any page) or a comma-separated list of origins");
  if (list.includes('*')) {
    if (list.length > 1)
      throw new OcdnError(ErrorCodes.CONFIG, `CORS origins: '*' allows every origin and cannot be combined with others (got ${list.join(',')})`);
    return '*';
  }
  const bad = list.filter((o) => !isOrigin(o));
  if (bad.length > 0)
    throw new OcdnError(
      ErrorCodes.CONFIG,
      `CORS origins: ${bad.map((b) => `"${b}"`).join(', ')} ${bad.length === 1 ? 'is not an origin' : 'are not origins'} (scheme://host[:port], lower case, no path or trailing slash, e.g. https://player.example.com)`,
    );
  return [...new Set(list)];
}

function isOrigin(s: string): boolean {
  try {
    const u = new URL(s);
    return (u.protocol === 'http:' || u.protocol === 'https:') && u.origin === s;
  } catch {
    return false;
  }
}

export interface CorsPolicy {
  readonly origins: CorsOrigins;
  /** `GET, HEAD` on edges; `GET, HEAD, POST` where browsers post (steering, the beacon ingest). */
  readonly methods: string;
  /**
   * The fields that do not depend on the request: with `*` all of them (ACAO, expose), so a
   * prebuilt header object (the edge's hit headers) carries them and nothing is added per
   * request; with an allow-list only `Vary: Origin`.
   */
  readonly fixed: Readonly<Record<string, string>>;
  /** The CORS fields of an answer to a request with this Origin header. */
  fields(origin: string | undefined): Readonly<Record<string, string>>;
  /** Whether a request's Origin may read answers (always with `*`). */
  allows(origin: string | undefined): boolean;
}

export function corsPolicy(opts: { origins?: CorsOrigins; methods?: readonly string[] } = {}): CorsPolicy {
  // Checked here too, so a library caller's typo fails at start-up as the flag's would.
  const origins = opts.origins === undefined ? '*' : parseCorsOrigins(opts.origins === '*' ? '*' : opts.origins);
  const methods = (opts.methods ?? ['GET', 'HEAD', 'POST']).join(', ');
  if (origins === '*') {
    const all = Object.freeze({ 'access-control-allow-origin': '*', 'access-control-expose-headers': CORS_EXPOSE_HEADERS });
    return { origins, methods, fixed: all, fields: () => all, allows: () => true };
  }
  const listed = new Set(origins);
  // An allow-list answers differently per Origin, so shared caches (and the browser's own) must
  // keep the answers apart, including the ones without the header.
  const vary = Object.freeze({ vary: 'Origin' });
  return {
    origins,
    methods,
    fixed: vary,
    allows: (origin) => origin !== undefined && listed.has(origin),
    fields: (origin) =>
      origin !== undefined && listed.has(origin)
        ? { 'access-control-allow-origin': origin, 'access-control-expose-headers': CORS_EXPOSE_HEADERS, vary: 'Origin' }
        : vary,
  };
}

/** The request's first Origin header, read from rawHeaders so req.headers is never built for it. */
export function requestOrigin(req: IncomingMessage): string | undefined {
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === 6 && name.toLowerCase() === 'origin') return raw[i + 1];
  }
  return undefined;
}

/** The headers of a preflight the policy allows (204). */
export function preflightHeaders(policy: CorsPolicy, origin: string | undefined): Record<string, string> {
  return {
    ...policy.fields(origin),
    allow: `${policy.methods}, OPTIONS`,
    'access-control-allow-methods': policy.methods,
    'access-control-allow-headers': CORS_ALLOW_HEADERS,
    'access-control-max-age': String(CORS_MAX_AGE_SEC),
  };
}

type HeadersArg = OutgoingHttpHeaders | OutgoingHttpHeader[] | undefined;

/**
 * `headers` with the CORS `fields` it lacks, as writeHead takes them. Returns `headers` itself
 * when nothing is missing, and never changes it (callers pass shared, prebuilt objects). An
 * existing Vary gets Origin appended rather than replaced.
 */
export function withCors(headers: HeadersArg, fields: Readonly<Record<string, string>>): HeadersArg {
  if (headers === undefined) return fields as OutgoingHttpHeaders;
  if (Array.isArray(headers)) {
    // writeHead's raw forms: [[name, value], …] or [name, value, …]; names compared in lower case.
    const pairs = Array.isArray(headers[0]);
    const names = new Set<string>();
    for (let i = 0; i < headers.length; i += pairs ? 1 : 2) names.add(String(pairs ? (headers[i] as unknown[])[0] : headers[i]).toLowerCase());
    const out = [...headers] as unknown[];
    for (const [k, v] of Object.entries(fields)) if (!names.has(k)) out.push(...(pairs ? [[k, v]] : [k, v]));
    return out as OutgoingHttpHeader[];
  }
  let out: OutgoingHttpHeaders | undefined;
  for (const k in fields) {
    const have = headers[k];
    if (have === undefined) (out ??= { ...headers })[k] = fields[k];
    else if (k === 'vary' && !/(^|,)\s*(origin|\*)\s*(,|$)/i.test(String(have))) (out ??= { ...headers })[k] = `${String(have)}, ${fields[k]}`;
  }
  return out ?? headers;
}

// ---- the CLI option ---------------------------------------------------------------------------

/** `--cors-origins` of `edge serve`, `steering serve` and `telemetry aggregate`: one spelling, one env. */
export const CORS_ORIGINS_FIELD = { type: 'string', flag: '--cors-origins', env: 'OCDN_CORS_ORIGINS', default: '*' } as const;

export const CORS_ORIGINS_HELP =
  "web pages allowed to read this server's answers (CORS): '*' for any, or comma-separated origins such as " +
  'https://player.example.com,http://localhost:8080, whose Origin is echoed with Vary: Origin (a preflight from any other gets 403) ' +
  '(env OCDN_CORS_ORIGINS) [default *]';

/** The option's value checked, or its problem added to `problems` (reported with the command's others). */
export function corsOriginsOption(value: string, problems: string[]): CorsOrigins | undefined {
  try {
    return parseCorsOrigins(value);
  } catch (err) {
    problems.push(`${CORS_ORIGINS_FIELD.flag} (or ${CORS_ORIGINS_FIELD.env}): ${(err as Error).message.replace(/^CORS origins: /, '')}`);
    return undefined;
  }
}

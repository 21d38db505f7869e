/**
 * One error type for the whole product. `code` is stable (tests, logs and scripts match on it);
 * `message` is for people and may change.
 */
export const ErrorCodes = {
  CONFIG: 'E_CONFIG',
  USAGE: 'E_USAGE',
  NOT_FOUND: 'E_NOT_FOUND',
  GONE: 'E_GONE',
  ORIGIN_UNAVAILABLE: 'E_ORIGIN_UNAVAILABLE',
  ORIGIN_TIMEOUT: 'E_ORIGIN_TIMEOUT',
  S3_UNREACHABLE: 'E_S3_UNREACHABLE',
  BAD_REQUEST: 'E_BAD_REQUEST',
  UNAUTHORIZED: 'E_UNAUTHORIZED',
  FORBIDDEN: 'E_FORBIDDEN',
  METHOD: 'E_METHOD',
  PAYLOAD_TOO_LARGE: 'E_PAYLOAD_TOO_LARGE',
  HEADERS_TOO_LARGE: 'E_HEADERS_TOO_LARGE',
  REQUEST_TIMEOUT: 'E_REQUEST_TIMEOUT',
  RANGE_NOT_SATISFIABLE: 'E_RANGE_NOT_SATISFIABLE',
  TOO_MANY: 'E_TOO_MANY',
  UNSUPPORTED_MEDIA_TYPE: 'E_UNSUPPORTED_MEDIA_TYPE',
  BUSY: 'E_BUSY',
  BAD_PLAYLIST: 'E_BAD_PLAYLIST',
  BAD_EVENT: 'E_BAD_EVENT',
  BROKER_UNAVAILABLE: 'E_BROKER_UNAVAILABLE',
  DEPENDENCY_MISSING: 'E_DEPENDENCY_MISSING',
  NO_EDGE: 'E_NO_EDGE',
  NOT_READY: 'E_NOT_READY',
  PORT_IN_USE: 'E_PORT_IN_USE',
  INTERNAL: 'E_INTERNAL',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

/**
 * The one code → HTTP status mapping every server answers with (common/http.ts sendError).
 * A Record over ErrorCode, so a new code does not compile until it has a status here.
 */
const HTTP_STATUS: Record<ErrorCode, number> = {
  // The caller's fault: fixing the request fixes the answer.
  E_BAD_REQUEST: 400,
  E_BAD_EVENT: 400,
  // A CLI usage error that reaches HTTP is still a bad request of the caller's.
  E_USAGE: 400,
  E_UNAUTHORIZED: 401,
  E_FORBIDDEN: 403,
  E_NOT_FOUND: 404,
  // Existed and will not again (an ended steering session): HLS Content Steering clients stop
  // reloading on 410 and only on 410 (hls.js content-steering-controller).
  E_GONE: 410,
  E_METHOD: 405,
  E_PAYLOAD_TOO_LARGE: 413,
  E_RANGE_NOT_SATISFIABLE: 416,
  // More request headers than the server reads (RFC 6585): refused, never cut silently.
  E_HEADERS_TOO_LARGE: 431,
  // The request head did not arrive in time (slowloris): the server hangs up.
  E_REQUEST_TIMEOUT: 408,
  E_TOO_MANY: 429,
  // A body in a format the receiver does not read (RFC 9110 §15.5.16).
  E_UNSUPPORTED_MEDIA_TYPE: 415,
  // An upstream (S3, the parent tier, the origin behind steering's session masters) that could
  // not be reached or gave an unusable answer: the server was acting as a gateway, so 502 from
  // every service (steering used to say 503 and edges 502 for the same failure).
  E_ORIGIN_UNAVAILABLE: 502,
  E_S3_UNREACHABLE: 502,
  E_BAD_PLAYLIST: 502,
  // The upstream did not answer in time: a gateway timeout.
  E_ORIGIN_TIMEOUT: 504,
  // This service cannot do the work right now but will again soon (no healthy edge yet, the
  // broker is back in a moment): 503, with Retry-After.
  E_NO_EDGE: 503,
  // Still starting: e.g. steering before its first catalog load.
  E_NOT_READY: 503,
  E_BROKER_UNAVAILABLE: 503,
  // At a capacity bound of the whole service (not of one client, that is E_TOO_MANY): try again soon.
  E_BUSY: 503,
  // The server itself is broken or misconfigured: nothing the caller can change.
  E_CONFIG: 500,
  E_DEPENDENCY_MISSING: 500,
  E_PORT_IN_USE: 500,
  E_INTERNAL: 500,
};

/** The HTTP status for an error code; the same from every service. */
export function httpStatus(code: ErrorCode): number {
  return HTTP_STATUS[code] ?? 500;
}

export class OcdnError extends Error {
  readonly code: ErrorCode;
  /** Extra facts for logs and error bodies (never secrets). */
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, opts: { cause?: unknown; details?: Record<string, unknown> } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'OcdnError';
    this.code = code;
    this.details = opts.details;
  }
}

export function isOcdnError(err: unknown, code?: ErrorCode): err is OcdnError {
  return err instanceof OcdnError && (code === undefined || err.code === code);
}

/** A one-line description of any thrown value, for CLI output and log lines. */
export function describeError(err: unknown): string {
  if (err instanceof OcdnError) return `${err.code}: ${err.message}`;
  if (err instanceof Error) return err.message || err.name;
  return String(err);
}

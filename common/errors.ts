/**
 * One error type for the whole product. `code` is stable (tests, logs and scripts match on it);
 * `message` is for people and may change.
 */
export const ErrorCodes = {
  CONFIG: 'E_CONFIG',
  USAGE: 'E_USAGE',
  NOT_FOUND: 'E_NOT_FOUND',
  ORIGIN_UNAVAILABLE: 'E_ORIGIN_UNAVAILABLE',
  ORIGIN_TIMEOUT: 'E_ORIGIN_TIMEOUT',
  S3_UNREACHABLE: 'E_S3_UNREACHABLE',
  BAD_REQUEST: 'E_BAD_REQUEST',
  FORBIDDEN: 'E_FORBIDDEN',
  BAD_PLAYLIST: 'E_BAD_PLAYLIST',
  BAD_EVENT: 'E_BAD_EVENT',
  BROKER_UNAVAILABLE: 'E_BROKER_UNAVAILABLE',
  DEPENDENCY_MISSING: 'E_DEPENDENCY_MISSING',
  NO_EDGE: 'E_NO_EDGE',
  PORT_IN_USE: 'E_PORT_IN_USE',
  INTERNAL: 'E_INTERNAL',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

export class OcdnError extends Error {
  readonly code: ErrorCode;
  /** Extra facts for logs (never secrets). */
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

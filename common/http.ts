import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Static, TSchema } from '@sinclair/typebox';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import type { ErrorBody } from './contracts.ts';
import { ErrorCodes, httpStatus, OcdnError } from './errors.ts';

/** Listens on host:port (0 = any free port) and resolves with the bound port. */
export function listen(server: Server, port: number, host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      server.off('listening', onListening);
      if (err.code === 'EADDRINUSE') reject(new OcdnError(ErrorCodes.PORT_IN_USE, `port ${host}:${port} is already in use`, { cause: err }));
      else reject(err);
    };
    const onListening = () => {
      server.off('error', onError);
      resolve((server.address() as AddressInfo).port);
    };
    server.once('error', onError);
    server.once('listening', onListening);
    server.listen(port, host);
  });
}

/**
 * Stops accepting, lets in-flight responses finish for up to `graceMs`, then cuts what is
 * left. Idle keep-alive sockets are closed at once so clients reconnect elsewhere.
 */
export async function closeServer(server: Server, graceMs = 5_000): Promise<void> {
  if (!server.listening) return;
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeIdleConnections();
  const timer = setTimeout(() => server.closeAllConnections(), graceMs);
  timer.unref();
  await closed;
  clearTimeout(timer);
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const data = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(data),
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(data);
}

/** A plain-text body (not for errors: every 4xx/5xx goes through sendError). */
export function sendText(res: ServerResponse, status: number, text: string, headers: Record<string, string> = {}): void {
  const data = text.endsWith('\n') ? text : `${text}\n`;
  res.writeHead(status, {
    'content-type': 'text/plain; charset=utf-8',
    'content-length': Buffer.byteLength(data),
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(data);
}

// ---- errors ----------------------------------------------------------------------------------

/** The one error body of every service: `{"error": {"code", "message", "details"?}}`, message on one line. */
export function errorBody(err: unknown): ErrorBody {
  const e =
    err instanceof OcdnError ? err : new OcdnError(ErrorCodes.INTERNAL, `internal error: ${err instanceof Error ? err.message || err.name : String(err)}`);
  const body: ErrorBody = { error: { code: e.code, message: oneLine(e.message) } };
  if (e.details !== undefined) body.error.details = e.details;
  return body;
}

/** The HTTP status an error answers with: httpStatus(code) for an OcdnError, 500 for anything else. */
export function statusOf(err: unknown): number {
  return err instanceof OcdnError ? httpStatus(err.code) : 500;
}

/**
 * Answers any error with its status (common/errors.ts httpStatus) and the one error body; returns
 * the status. A 503 carries Retry-After: the condition is expected to pass (an edge coming up,
 * the broker back). After the head is sent nothing more can be said: the response is cut.
 */
export function sendError(res: ServerResponse, err: unknown, headers: Record<string, string> = {}): number {
  const status = statusOf(err);
  if (res.headersSent) {
    res.destroy();
    return status;
  }
  sendJson(res, status, errorBody(err), status === 503 ? { 'retry-after': '1', ...headers } : headers);
  return status;
}

/** A 405 naming the methods the route takes, with the Allow header. */
export function sendMethodNotAllowed(res: ServerResponse, method: string | undefined, allow: string, headers: Record<string, string> = {}): number {
  return sendError(res, new OcdnError(ErrorCodes.METHOD, `method ${String(method).slice(0, 16)} not allowed (use ${allow})`), { allow, ...headers });
}

/** One line of at most 500 characters: error bodies and log lines stay greppable. */
function oneLine(s: string): string {
  const line = s.replace(/\s+/g, ' ').trim();
  return line.length > 500 ? `${line.slice(0, 499)}…` : line;
}

/**
 * For clients: "E_CODE: message" of an error body, or the first line of any other text (an
 * older peer, a proxy's error page).
 */
export function errorMessage(text: string): string {
  try {
    const e = (JSON.parse(text) as Partial<ErrorBody> | null)?.error;
    if (e && typeof e.code === 'string' && typeof e.message === 'string') return `${e.code}: ${e.message}`;
  } catch {
    // not JSON: the text is the message
  }
  return (text.trim().split('\n')[0] ?? '').slice(0, 300);
}

// ---- bodies ----------------------------------------------------------------------------------

/**
 * Reads a JSON body up to `limit` bytes: E_PAYLOAD_TOO_LARGE past it (refused from
 * Content-Length before reading when that says so), E_BAD_REQUEST for an empty or broken body.
 */
export async function readJsonBody(req: IncomingMessage, limit = 1 << 20): Promise<unknown> {
  return parseJsonBody(await readRawBody(req, limit));
}

/** A body's bytes up to `limit` (E_PAYLOAD_TOO_LARGE past it), for receivers that check bytes before parsing (signatures). */
export async function readRawBody(req: IncomingMessage, limit = 1 << 20): Promise<Buffer> {
  const tooLarge = () => new OcdnError(ErrorCodes.PAYLOAD_TOO_LARGE, `body larger than ${limit} bytes`);
  if (Number(req.headers['content-length']) > limit) throw tooLarge();
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw tooLarge();
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/** Parses a body read by readRawBody: E_BAD_REQUEST for an empty or broken one. */
export function parseJsonBody(raw: Buffer): unknown {
  const text = raw.toString('utf8');
  if (text.trim() === '') throw new OcdnError(ErrorCodes.BAD_REQUEST, 'empty body, expected JSON');
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new OcdnError(ErrorCodes.BAD_REQUEST, `body is not valid JSON: ${(err as Error).message}`);
  }
}

// One Ajv for every contract: no coercion, no defaults, no removal (a body is checked, never
// rewritten), NaN and Infinity refused.
const ajv = new Ajv({ allErrors: false, strict: true, strictNumbers: true, coerceTypes: false, useDefaults: false, removeAdditional: false, verbose: true });

/** Checks a parsed body against its contract; throws E_BAD_REQUEST naming each wrong field. */
export type BodyValidator<T> = (raw: unknown) => T;

/**
 * Compiles a contract's schema: call it at module load, never per request. A valid body costs
 * one generated function call. An invalid one is described field by field, at most one problem
 * per top-level field, so a body with a million bad entries still gets a short answer.
 */
export function bodyValidator<S extends TSchema>(schema: S, what: string): BodyValidator<Static<S>> {
  const whole = ajv.compile(schema) as ValidateFunction<Static<S>>;
  const props = (schema as { properties?: Record<string, TSchema> }).properties ?? {};
  const required = new Set((schema as { required?: string[] }).required ?? []);
  const fields = Object.entries(props).map(([name, s]) => ({ name, hint: hintOf(s), check: ajv.compile(s) }));
  return (raw) => {
    if (whole(raw)) return raw;
    const problems: string[] = [];
    if (typeof raw === 'object' && raw !== null && !Array.isArray(raw)) {
      const obj = raw as Record<string, unknown>;
      for (const f of fields) {
        const v = obj[f.name];
        if (v === undefined) {
          if (required.has(f.name)) problems.push(`${f.name}: is required${f.hint ? ` and ${f.hint}` : ''}`);
        } else if (!f.check(v)) problems.push(describeProblem(firstError(f.check.errors), f.name));
      }
    }
    if (problems.length === 0) problems.push(describeProblem(firstError(whole.errors), ''));
    throw new OcdnError(ErrorCodes.BAD_REQUEST, `invalid ${what}: ${problems.join('; ')}`, { details: { problems } });
  };
}

/** Reads a JSON body and checks it against its contract. */
export async function readBody<T>(req: IncomingMessage, check: BodyValidator<T>, limit?: number): Promise<T> {
  return check(await readJsonBody(req, limit));
}

const hintOf = (s: unknown): string | undefined => (s as { description?: string } | undefined)?.description;

// Array-size and missing-field problems read best in Ajv's words; the rest in the schema's.
const AJV_WORDS = new Set(['maxItems', 'minItems', 'required', 'maxProperties', 'additionalProperties']);

/** The error to show: a failed union as a whole (its description), else the first one. */
function firstError(errors: ErrorObject[] | null | undefined): ErrorObject | undefined {
  return errors?.find((e) => e.keyword === 'anyOf' || e.keyword === 'oneOf') ?? errors?.[0];
}

function describeProblem(e: ErrorObject | undefined, field: string): string {
  const inner = e?.instancePath.split('/').slice(1).join('.') ?? '';
  const msg = (e && !AJV_WORDS.has(e.keyword) ? hintOf(e.parentSchema) : undefined) ?? e?.message ?? 'is invalid';
  if (field === '') return inner === '' ? msg : `${inner}: ${msg}`;
  return inner === '' ? `${field}: ${msg}` : `${field}: at ${inner}, ${msg}`;
}

// ---- tests and scripts -----------------------------------------------------------------------

/** The one poll lives with the one retry; re-exported here, where scripts and tests have always found it. */
export { waitFor } from './retry.ts';

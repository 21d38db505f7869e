import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ErrorCodes, OcdnError } from './errors.ts';

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

/** A one-line plain-text error: what curl users and log scrapers read best. */
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

/** Reads a JSON body up to `limit` bytes; throws OcdnError(BAD_REQUEST) on anything else. */
export async function readJsonBody(req: IncomingMessage, limit = 1 << 20): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new OcdnError(ErrorCodes.BAD_REQUEST, `body larger than ${limit} bytes`);
    chunks.push(chunk as Buffer);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') throw new OcdnError(ErrorCodes.BAD_REQUEST, 'empty body, expected JSON');
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new OcdnError(ErrorCodes.BAD_REQUEST, `body is not valid JSON: ${(err as Error).message}`);
  }
}

/** The one poll lives with the one retry; re-exported here, where scripts and tests have always found it. */
export { waitFor } from './retry.ts';

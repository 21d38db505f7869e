import { execFile } from 'node:child_process';
import { request } from 'node:http';
import { promisify } from 'node:util';
import { expect } from 'vitest';
import { CORS_EXPOSE_HEADERS } from '../common/cors.ts';

export interface Answer {
  status: number;
  /** Lower-case names; repeated fields joined with ", ". */
  headers: Record<string, string>;
  /** Every field as sent, to count repeats. */
  raw: string[];
  body: Buffer;
}

/**
 * One request on its own connection with the path exactly as written (node:http does not
 * normalise it, unlike fetch), keeping the raw header list so a field sent twice is seen.
 */
export function call(base: string, path: string, opts: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Answer> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, path, method: opts.method ?? 'GET', headers: opts.headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const headers: Record<string, string> = {};
        for (let i = 0; i < res.rawHeaders.length; i += 2) {
          const k = res.rawHeaders[i]!.toLowerCase();
          headers[k] = headers[k] === undefined ? res.rawHeaders[i + 1]! : `${headers[k]}, ${res.rawHeaders[i + 1]}`;
        }
        resolve({ status: res.statusCode ?? 0, headers, raw: res.rawHeaders, body: Buffer.concat(chunks) });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

const count = (a: Answer, name: string) => a.raw.filter((n, i) => i % 2 === 0 && n.toLowerCase() === name).length;

/** The answer lets a page of `origin` read it ('*': any page): ACAO once, the exposed headers, Vary for an echo. */
export function expectCors(a: Answer, origin = '*'): void {
  const what = `${a.status} ${JSON.stringify(a.headers)}`;
  expect(a.headers['access-control-allow-origin'], what).toBe(origin);
  expect(count(a, 'access-control-allow-origin'), what).toBe(1);
  expect(a.headers['access-control-expose-headers'], what).toBe(CORS_EXPOSE_HEADERS);
  for (const h of ['X-Edge-Id', 'X-Cache', 'Cache-Status', 'Age', 'Content-Range'])
    expect(a.headers['access-control-expose-headers']!.split(', '), what).toContain(h);
  if (origin === '*') expect(a.headers.vary, what).toBeUndefined();
  else expect(a.headers.vary, what).toMatch(/(^|, )Origin($|,)/);
}

/** The answer of an allow-list server to a request it does not let read: no ACAO, but Vary: Origin. */
export function expectNoCors(a: Answer): void {
  const what = `${a.status} ${JSON.stringify(a.headers)}`;
  expect(a.headers['access-control-allow-origin'], what).toBeUndefined();
  expect(a.headers.vary, what).toMatch(/(^|, )Origin($|,)/);
}

/** A preflight as a browser sends it, for a GET carrying Range and CMCD headers. */
export const PREFLIGHT = {
  origin: 'https://player.example',
  'access-control-request-method': 'GET',
  'access-control-request-headers': 'range, cmcd-request, cmcd-session',
};

/** A 204 preflight that allows `methods` and the headers of PREFLIGHT, cached a day. */
export function expectPreflight(a: Answer, methods: string, origin = '*'): void {
  const what = `${a.status} ${JSON.stringify(a.headers)}`;
  expect(a.status, what).toBe(204);
  expect(a.body.length).toBe(0);
  expect(a.headers['access-control-allow-origin'], what).toBe(origin);
  expect(a.headers['access-control-allow-methods'], what).toBe(methods);
  const allowed = a.headers['access-control-allow-headers']!.split(',').map((h) => h.trim().toLowerCase());
  for (const h of ['range', 'cmcd-request', 'cmcd-session', 'cmcd-object', 'cmcd-status', 'if-none-match', 'if-range', 'content-type'])
    expect(allowed, what).toContain(h);
  expect(a.headers['access-control-max-age'], what).toBe('86400');
  expect(a.headers['content-length'], what).toBeUndefined();
}

const run = promisify(execFile);

/** The same preflight from curl, a client that is not Node's: status and lower-cased headers. */
export async function curlPreflight(url: string, origin = PREFLIGHT.origin): Promise<Answer> {
  const { stdout } = await run('curl', [
    '-sS',
    '-i',
    '-X',
    'OPTIONS',
    '-H',
    `Origin: ${origin}`,
    '-H',
    `Access-Control-Request-Method: ${PREFLIGHT['access-control-request-method']}`,
    '-H',
    `Access-Control-Request-Headers: ${PREFLIGHT['access-control-request-headers']}`,
    '--max-time',
    '10',
    url,
  ]);
  const [head = '', ...rest] = stdout.split('\r\n\r\n');
  const lines = head.split('\r\n');
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(lines[0] ?? '')?.[1]);
  const headers: Record<string, string> = {};
  const raw: string[] = [];
  for (const line of lines.slice(1)) {
    const c = line.indexOf(':');
    const k = line.slice(0, c).trim();
    const v = line.slice(c + 1).trim();
    raw.push(k, v);
    headers[k.toLowerCase()] = headers[k.toLowerCase()] === undefined ? v : `${headers[k.toLowerCase()]}, ${v}`;
  }
  return { status, headers, raw, body: Buffer.from(rest.join('\r\n\r\n')) };
}

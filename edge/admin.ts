import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import { ErrorCodes, OcdnError, describeError, isOcdnError } from '../common/errors.ts';
import { readJsonBody, sendJson, sendText } from '../common/http.ts';
import type { Logger } from '../common/log.ts';
import { parseBytes } from '../common/units.ts';
import { bearerMatches } from './auth.ts';
import type { EdgeCache } from './cache.ts';
import { checkPath } from './path.ts';

export const DEFAULT_FILL_RATE = 20_000_000; // bytes/s: a fill must never starve live traffic
const MAX_RUNNING_JOBS = 4;
const MAX_KEYS = 100_000;
const KEPT_JOBS = 50;

export interface FillJob {
  id: string;
  title: string | undefined;
  state: 'running' | 'done' | 'failed' | 'cancelled';
  bytesPerSecond: number;
  /** Keys to fill; grows while a title's playlists are read. */
  keys: number;
  done: number;
  /** Keys that were already fresh in the cache. */
  alreadyCached: number;
  bytesFetched: number;
  failed: { key: string; reason: string }[];
  error?: string;
  startedAt: string;
  finishedAt?: string;
}

interface FillRequest {
  keys: string[];
  title: string | undefined;
  bytesPerSecond: number;
  wait: boolean;
}

/**
 * Admin API, behind `Authorization: Bearer <admin token>`:
 * - `POST /admin/fill {keys: [...]} | {title}` (+ `bytesPerSecond`, `wait`) prefetches into the
 *   cache at a bounded byte rate; answers 202 with the job (or 200 when done, with `wait: true`).
 *   `GET /admin/fill[/<id>]` shows jobs.
 * - `POST /admin/purge {prefix, soft}`: hard purge drops entries; soft marks them stale so the
 *   next request revalidates while the old copy stays available for stale-if-error.
 */
export class Admin {
  private readonly jobs = new Map<string, FillJob>();
  private readonly stop = new AbortController();

  constructor(private readonly opts: { cache: EdgeCache; adminToken: string | undefined; log: Logger }) {}

  async handle(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    if (this.opts.adminToken === undefined) return sendText(res, 403, 'forbidden: admin API disabled (start the edge with --admin-token)');
    if (!bearerMatches(req.headers.authorization, this.opts.adminToken)) {
      return sendText(res, 401, 'unauthorized: admin token required (Authorization: Bearer <token>)', { 'www-authenticate': 'Bearer realm="ocdn-edge-admin"' });
    }
    try {
      if (path === '/admin/purge' && req.method === 'POST') return sendJson(res, 200, this.purge(await readJsonBody(req, 64 * 1024)));
      if (path === '/admin/fill' && req.method === 'POST') return await this.startFill(res, parseFill(await readJsonBody(req, 4 << 20)));
      if (path === '/admin/fill' && req.method === 'GET') return sendJson(res, 200, { jobs: [...this.jobs.values()].map(summary) });
      if (path.startsWith('/admin/fill/') && req.method === 'GET') {
        const job = this.jobs.get(path.slice('/admin/fill/'.length));
        return job ? sendJson(res, 200, job) : sendText(res, 404, 'no such fill job');
      }
      if (['/admin/purge', '/admin/fill'].includes(path))
        return sendText(res, 405, `method ${req.method} not allowed`, { allow: path === '/admin/fill' ? 'GET, POST' : 'POST' });
      return sendText(res, 404, `no admin endpoint ${path}`);
    } catch (err) {
      if (isOcdnError(err, ErrorCodes.BAD_REQUEST)) return sendText(res, 400, `bad request: ${err.message}`);
      this.opts.log.error({ err: describeError(err), path }, 'admin request failed');
      return sendText(res, 500, `internal error: ${describeError(err)}`);
    }
  }

  /** Cancels running fills (shutdown). */
  close(): void {
    this.stop.abort(new Error('edge shutting down'));
  }

  get runningJobs(): number {
    let n = 0;
    for (const j of this.jobs.values()) if (j.state === 'running') n++;
    return n;
  }

  private purge(body: unknown): { prefix: string; soft: boolean; purged: number } {
    if (typeof body !== 'object' || body === null) throw badRequest('expected {"prefix": "/vod/...", "soft": false}');
    const { prefix: rawPrefix, soft = false } = body as { prefix?: unknown; soft?: unknown };
    if (typeof rawPrefix !== 'string') throw badRequest('"prefix" (string, e.g. "/vod/title-0001/") is required');
    if (typeof soft !== 'boolean') throw badRequest('"soft" must be true or false');
    const prefix = rawPrefix.startsWith('/') ? rawPrefix : `/${rawPrefix}`;
    if (!/^\/vod\/[A-Za-z0-9._/-]*$/.test(prefix) || /(^|\/)\.\.?(\/|$)/.test(prefix)) {
      throw badRequest(`prefix must be under /vod/ and use only A-Z a-z 0-9 . _ - / (got ${JSON.stringify(rawPrefix).slice(0, 100)})`);
    }
    const purged = this.opts.cache.purge(prefix, soft);
    this.opts.log.info({ prefix, soft, purged }, 'purge');
    return { prefix, soft, purged };
  }

  private async startFill(res: ServerResponse, fill: FillRequest): Promise<void> {
    if (this.runningJobs >= MAX_RUNNING_JOBS)
      return sendText(res, 429, `too many fills running (max ${MAX_RUNNING_JOBS}); retry later`, { 'retry-after': '5' });
    const job: FillJob = {
      id: randomUUID(),
      title: fill.title,
      state: 'running',
      bytesPerSecond: fill.bytesPerSecond,
      keys: fill.keys.length,
      done: 0,
      alreadyCached: 0,
      bytesFetched: 0,
      failed: [],
      startedAt: new Date().toISOString(),
    };
    this.jobs.set(job.id, job);
    this.trimJobs();
    this.opts.log.info({ job: job.id, title: fill.title, keys: fill.keys.length, bytesPerSecond: fill.bytesPerSecond }, 'fill started');
    const running = this.runFill(job, fill)
      .catch((err: unknown) => {
        job.state = this.stop.signal.aborted ? 'cancelled' : 'failed';
        job.error = describeError(err);
      })
      .finally(() => {
        job.finishedAt = new Date().toISOString();
        this.opts.log.info({ job: job.id, state: job.state, done: job.done, failed: job.failed.length, bytes: job.bytesFetched }, 'fill finished');
      });
    if (!fill.wait) return sendJson(res, 202, summary(job));
    await running;
    sendJson(res, 200, job);
  }

  private async runFill(job: FillJob, fill: FillRequest): Promise<void> {
    const started = Date.now();
    const seen = new Set<string>();
    const queue: string[] = [];
    const enqueue = (key: string) => {
      if (seen.has(key)) return;
      seen.add(key);
      queue.push(key);
    };
    for (const k of fill.keys) enqueue(k);
    if (fill.title !== undefined) enqueue(`/vod/${fill.title}/master.m3u8`);
    job.keys = queue.length;
    for (let i = 0; i < queue.length; i++) {
      if (this.stop.signal.aborted) throw this.stop.signal.reason;
      const key = queue[i]!;
      try {
        const r = await this.opts.cache.lookup(key);
        if (r.entry.kind === 'missing') job.failed.push({ key, reason: 'not found' });
        else {
          if (r.outcome === 'HIT') job.alreadyCached++;
          else if (r.outcome === 'MISS') job.bytesFetched += r.entry.body.length;
          // A title fill follows its playlists: master → media playlists → segments and init sections.
          if (fill.title !== undefined && key.endsWith('.m3u8')) {
            for (const uri of playlistUris(r.entry.body.toString('utf8'))) {
              const child = resolveUri(key, uri);
              if (child !== undefined) enqueue(child);
            }
            job.keys = queue.length;
          }
        }
      } catch (err) {
        job.failed.push({ key, reason: describeError(err) });
      }
      job.done++;
      // Pace on bytes actually pulled from upstream, so cached keys cost nothing.
      const dueMs = (job.bytesFetched / job.bytesPerSecond) * 1000 - (Date.now() - started);
      if (dueMs > 0) await sleep(dueMs, this.stop.signal);
    }
    job.state = 'done';
  }

  private trimJobs(): void {
    for (const [id, j] of this.jobs) {
      if (this.jobs.size <= KEPT_JOBS) break;
      if (j.state !== 'running') this.jobs.delete(id);
    }
  }
}

function summary(job: FillJob): Omit<FillJob, 'failed'> & { failed: number } {
  return { ...job, failed: job.failed.length };
}

function badRequest(msg: string): OcdnError {
  return new OcdnError(ErrorCodes.BAD_REQUEST, msg);
}

function parseFill(body: unknown): FillRequest {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw badRequest('expected {"keys": [...]} or {"title": "..."}');
  const b = body as { keys?: unknown; title?: unknown; bytesPerSecond?: unknown; wait?: unknown };
  const keys: string[] = [];
  if (b.keys !== undefined) {
    if (!Array.isArray(b.keys) || b.keys.some((k) => typeof k !== 'string')) throw badRequest('"keys" must be an array of strings');
    if (b.keys.length > MAX_KEYS) throw badRequest(`at most ${MAX_KEYS} keys per fill`);
    const bad: string[] = [];
    for (const raw of b.keys as string[]) {
      const key = raw.startsWith('/') ? raw : `/${raw}`;
      if (checkPath(key) !== undefined) bad.push(raw);
      else keys.push(key);
    }
    if (bad.length > 0)
      throw badRequest(
        `invalid keys: ${bad
          .slice(0, 5)
          .map((k) => JSON.stringify(k.slice(0, 80)))
          .join(', ')}${bad.length > 5 ? ` and ${bad.length - 5} more` : ''}`,
      );
  }
  let title: string | undefined;
  if (b.title !== undefined) {
    if (typeof b.title !== 'string' || !/^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$/.test(b.title)) throw badRequest('"title" must be a title id like "title-0001"');
    title = b.title;
  }
  if (keys.length === 0 && title === undefined) throw badRequest('give "keys" (non-empty) or "title"');
  let bytesPerSecond = DEFAULT_FILL_RATE;
  if (b.bytesPerSecond !== undefined) {
    try {
      bytesPerSecond = parseBytes(b.bytesPerSecond as string | number);
    } catch {
      bytesPerSecond = 0;
    }
    if (!(bytesPerSecond > 0)) throw badRequest('"bytesPerSecond" must be a positive number or a size like "50MB"');
  }
  if (b.wait !== undefined && typeof b.wait !== 'boolean') throw badRequest('"wait" must be true or false');
  return { keys, title, bytesPerSecond, wait: b.wait === true };
}

/** URIs a playlist references: URI lines and URI="..." attributes (EXT-X-MAP, EXT-X-MEDIA, I-frame streams). */
export function playlistUris(text: string): string[] {
  const out: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '') continue;
    if (line.startsWith('#')) {
      for (const m of line.matchAll(/URI="([^"]*)"/g)) out.push(m[1]!);
    } else out.push(line);
  }
  return out;
}

/** Resolves a playlist-relative URI to a checked `/vod/...` key; undefined for anything off this edge. */
function resolveUri(playlistKey: string, uri: string): string | undefined {
  let url: URL;
  try {
    url = new URL(uri, `http://edge${playlistKey}`);
  } catch {
    return undefined;
  }
  if (url.host !== 'edge') return undefined;
  return checkPath(url.pathname) === undefined ? url.pathname : undefined;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal.reason);
    };
    const t = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

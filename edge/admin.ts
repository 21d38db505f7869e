import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  ADMIN_LIMITS,
  type FillJob,
  type FillJobList,
  type FillJobSummary,
  type FillRequest,
  FillRequestSchema,
  type FillSource,
  type PurgeRequest,
  PurgeRequestSchema,
  type PurgeResponse,
} from '../common/contracts.ts';
import { describeError, ErrorCodes, OcdnError } from '../common/errors.ts';
import { bodyValidator, readBody, sendError, sendJson, sendMethodNotAllowed, statusOf } from '../common/http.ts';
import type { Logger } from '../common/log.ts';
import { parseBytes } from '../common/units.ts';
import { bearerMatches } from './auth.ts';
import type { EdgeCache } from './cache.ts';
import type { DiskTier } from './disk-tier.ts';
import { checkPath } from './path.ts';
import { ParentUpstream, type Upstream, type UpstreamObject } from './upstream.ts';

export const DEFAULT_FILL_RATE = 20_000_000; // bytes/s: a fill must never starve live traffic
const MAX_RUNNING_JOBS = 4;
const KEPT_JOBS = 50;

export type { FillJob } from '../common/contracts.ts';

// The wire contracts (common/contracts.ts), compiled once.
const checkFill = bodyValidator(FillRequestSchema, 'fill request');
const checkPurge = bodyValidator(PurgeRequestSchema, 'purge request');

/** A fill request once its keys are checked and normalised. */
interface FillPlan {
  keys: string[];
  title: string | undefined;
  bytesPerSecond: number;
  wait: boolean;
  source: FillSource;
}

/** Where a peer edge answers fills from what it holds (`GET {SOURCE_PREFIX}/vod/...`). */
export const SOURCE_PREFIX = '/admin/source';

/**
 * One byte rate shared by every fill job of the edge: each job books the bytes it just pulled
 * on one timeline and waits until the timeline catches up, so however many jobs run, the
 * edge's fill bytes from the first job's start never exceed cap × elapsed.
 */
class FillPacer {
  private at = 0;
  constructor(readonly bytesPerSecond: number) {}
  /** ms to wait after pulling `bytes`. */
  book(bytes: number): number {
    const now = Date.now();
    this.at = Math.max(this.at, now) + (bytes / this.bytesPerSecond) * 1000;
    return this.at - now;
  }
}

/** A peer first; what it does not hold (evicted since its heartbeat, an expired playlist) or cannot give comes from the edge's own upstream. */
class PeerThenOwn implements Upstream {
  readonly kind = 'peer' as const;
  constructor(
    private readonly peer: Upstream,
    private readonly own: Upstream,
    private readonly onFallback: () => void,
  ) {}
  async get(path: string): Promise<UpstreamObject> {
    try {
      return await this.peer.get(path);
    } catch {
      this.onFallback();
      return this.own.get(path);
    }
  }
  ping(): Promise<void> {
    return this.peer.ping();
  }
  close(): Promise<void> {
    return this.peer.close();
  }
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

  private readonly pacer: FillPacer | undefined;

  constructor(
    private readonly opts: {
      cache: EdgeCache;
      adminToken: string | undefined;
      log: Logger;
      /** The edge's own upstream: what a peer fill falls back to. */
      upstream?: Upstream;
      /** Disk tier: the fill source answers from it too. */
      disk?: DiskTier;
      edgeId?: string;
      /** Bytes/s all fill jobs of this edge pull at most, together. */
      fillRateCap?: number;
      /** Timeout of a peer's fill source. */
      peerTimeoutMs?: number;
    },
  ) {
    this.pacer = opts.fillRateCap !== undefined && opts.fillRateCap > 0 ? new FillPacer(opts.fillRateCap) : undefined;
  }

  /** The edge-wide fill rate cap, bytes/s (undefined: only each job's own rate). */
  get fillRateCap(): number | undefined {
    return this.pacer?.bytesPerSecond;
  }

  async handle(req: IncomingMessage, res: ServerResponse, path: string, headers: Record<string, string> = {}): Promise<void> {
    try {
      if (this.opts.adminToken === undefined) throw new OcdnError(ErrorCodes.FORBIDDEN, 'admin API disabled (start the edge with --admin-token)');
      if (!bearerMatches(req.headers.authorization, this.opts.adminToken)) {
        const err = new OcdnError(ErrorCodes.UNAUTHORIZED, 'admin token required (Authorization: Bearer <token>)');
        return void sendError(res, err, { 'www-authenticate': 'Bearer realm="ocdn-edge-admin"', ...headers });
      }
      const method = req.method === 'HEAD' ? 'GET' : req.method;
      if (path === '/admin/purge') {
        if (method !== 'POST') return void sendMethodNotAllowed(res, req.method, 'POST', headers);
        return sendJson(res, 200, this.purge(await readBody(req, checkPurge, ADMIN_LIMITS.purgeBodyBytes)), headers);
      }
      if (path === '/admin/fill') {
        if (method === 'POST') return await this.startFill(res, parseFill(await readBody(req, checkFill, ADMIN_LIMITS.fillBodyBytes)), headers);
        if (method !== 'GET') return void sendMethodNotAllowed(res, req.method, 'GET, POST', headers);
        const list: FillJobList = { jobs: [...this.jobs.values()].map(summary) };
        return sendJson(res, 200, list, headers);
      }
      if (path.startsWith(`${SOURCE_PREFIX}/`)) {
        if (method !== 'GET') return void sendMethodNotAllowed(res, req.method, 'GET, HEAD', headers);
        return await this.serveSource(req, res, path.slice(SOURCE_PREFIX.length), headers);
      }
      if (path.startsWith('/admin/fill/')) {
        if (method !== 'GET') return void sendMethodNotAllowed(res, req.method, 'GET', headers);
        const id = path.slice('/admin/fill/'.length);
        const job = this.jobs.get(id);
        if (!job) throw new OcdnError(ErrorCodes.NOT_FOUND, `no fill job "${id.slice(0, 64)}" (GET /admin/fill lists them)`);
        return sendJson(res, 200, job, headers);
      }
      throw new OcdnError(ErrorCodes.NOT_FOUND, `no admin endpoint ${path.slice(0, 200)} (there are /admin/fill, /admin/purge and ${SOURCE_PREFIX}/vod/...)`);
    } catch (err) {
      if (statusOf(err) >= 500) this.opts.log.error({ err: describeError(err), path }, 'admin request failed');
      sendError(res, err, headers);
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

  /**
   * Fill source for peers: the object only if this edge holds it (fresh in RAM, or on disk),
   * 404 otherwise. It never goes upstream: a peer asking for what nobody in the site holds
   * must go to its own upstream, not make this edge fetch for it.
   */
  private async serveSource(req: IncomingMessage, res: ServerResponse, key: string, headers: Record<string, string>): Promise<void> {
    const bad = checkPath(key);
    if (bad !== undefined || !key.startsWith('/vod/')) throw badRequest(bad ?? 'only /vod/... objects are fill sources');
    const ram = this.opts.cache.fresh(key);
    let found: { body: Buffer; sha256: string; contentType: string; bornAt: number; cmsdStatic: string | undefined } | undefined;
    if (ram?.kind === 'object') {
      const cmsd = ram.hit['cmsd-static'];
      found = { body: ram.body, sha256: ram.sha256, contentType: ram.contentType, bornAt: ram.bornAt, cmsdStatic: typeof cmsd === 'string' ? cmsd : undefined };
    } else if (ram === undefined) {
      // VOD objects do not change under a key: a disk copy past its freshness is still the object.
      const d = await this.opts.disk?.read(key);
      if (d) found = { body: d.body, sha256: d.meta.sha256, contentType: d.meta.contentType, bornAt: d.meta.bornAt, cmsdStatic: d.meta.cmsdStatic };
    }
    if (found === undefined) throw new OcdnError(ErrorCodes.NOT_FOUND, `not held by this edge: ${key.slice(0, 200)}`);
    res.writeHead(200, {
      ...headers,
      'content-type': found.contentType,
      'content-length': found.body.length,
      etag: `"${found.sha256}"`,
      age: String(Math.max(0, Math.floor((Date.now() - found.bornAt) / 1000))),
      ...(found.cmsdStatic ? { 'cmsd-static': found.cmsdStatic } : {}),
    });
    res.end(req.method === 'HEAD' ? undefined : found.body);
  }

  /** The upstream of a fill: the edge's own, or a peer with the own one behind it. */
  private sourceOf(fill: FillPlan, job: FillJob): Upstream | undefined {
    if (fill.source.kind !== 'peer') return undefined;
    if (!this.opts.upstream || this.opts.adminToken === undefined) return undefined;
    const peer = new ParentUpstream(fill.source.url, {
      timeoutMs: this.opts.peerTimeoutMs ?? 10_000,
      tokenSecret: null,
      edgeId: this.opts.edgeId ?? 'edge',
      peer: { pathPrefix: SOURCE_PREFIX, authorization: `Bearer ${this.opts.adminToken}` },
    });
    return new PeerThenOwn(peer, this.opts.upstream, () => {
      job.fromUpstream = (job.fromUpstream ?? 0) + 1;
    });
  }

  private purge(body: PurgeRequest): PurgeResponse {
    const soft = body.soft ?? false;
    const prefix = body.prefix.startsWith('/') ? body.prefix : `/${body.prefix}`;
    const purged = this.opts.cache.purge(prefix, soft);
    this.opts.log.info({ prefix, soft, purged }, 'purge');
    return { prefix, soft, purged };
  }

  private async startFill(res: ServerResponse, fill: FillPlan, headers: Record<string, string>): Promise<void> {
    if (this.runningJobs >= MAX_RUNNING_JOBS) {
      const err = new OcdnError(ErrorCodes.TOO_MANY, `too many fills running (max ${MAX_RUNNING_JOBS}); retry later`);
      return void sendError(res, err, { 'retry-after': '5', ...headers });
    }
    const job: FillJob = {
      id: randomUUID(),
      title: fill.title,
      state: 'running',
      bytesPerSecond: this.pacer ? Math.min(fill.bytesPerSecond, this.pacer.bytesPerSecond) : fill.bytesPerSecond,
      source: fill.source.kind === 'peer' ? `peer ${fill.source.url}` : 'upstream',
      keys: fill.keys.length,
      done: 0,
      alreadyCached: 0,
      bytesFetched: 0,
      failed: [],
      startedAt: new Date().toISOString(),
    };
    this.jobs.set(job.id, job);
    this.trimJobs();
    this.opts.log.info({ job: job.id, title: fill.title, keys: fill.keys.length, bytesPerSecond: job.bytesPerSecond, source: job.source }, 'fill started');
    const running = this.runFill(job, fill)
      .catch((err: unknown) => {
        job.state = this.stop.signal.aborted ? 'cancelled' : 'failed';
        job.error = describeError(err);
      })
      .finally(() => {
        job.finishedAt = new Date().toISOString();
        this.opts.log.info({ job: job.id, state: job.state, done: job.done, failed: job.failed.length, bytes: job.bytesFetched }, 'fill finished');
      });
    if (!fill.wait) return sendJson(res, 202, summary(job), headers);
    await running;
    sendJson(res, 200, job, headers);
  }

  private async runFill(job: FillJob, fill: FillPlan): Promise<void> {
    const started = Date.now();
    const via = this.sourceOf(fill, job);
    try {
      await this.fillKeys(job, fill, started, via);
    } finally {
      await via?.close();
    }
  }

  private async fillKeys(job: FillJob, fill: FillPlan, started: number, via: Upstream | undefined): Promise<void> {
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
      let pulled = 0;
      try {
        const r = await this.opts.cache.lookup(key, via);
        if (r.entry.kind === 'missing') job.failed.push({ key, reason: 'not found' });
        else {
          if (r.outcome === 'HIT') job.alreadyCached++;
          else if (r.outcome === 'MISS') {
            job.bytesFetched += r.entry.body.length;
            pulled = r.entry.body.length;
          }
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
      const dueMs = Math.max((job.bytesFetched / job.bytesPerSecond) * 1000 - (Date.now() - started), pulled > 0 && this.pacer ? this.pacer.book(pulled) : 0);
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

function summary(job: FillJob): FillJobSummary {
  return { ...job, failed: job.failed.length };
}

function badRequest(msg: string): OcdnError {
  return new OcdnError(ErrorCodes.BAD_REQUEST, msg);
}

/** What the schema cannot say: every key is a servable path, one of keys or title, a rate. */
function parseFill(b: FillRequest): FillPlan {
  const keys: string[] = [];
  const bad: string[] = [];
  for (const raw of b.keys ?? []) {
    const key = raw.startsWith('/') ? raw : `/${raw}`;
    if (checkPath(key) !== undefined) bad.push(raw);
    else keys.push(key);
  }
  if (bad.length > 0) {
    const shown = bad
      .slice(0, 5)
      .map((k) => JSON.stringify(k.slice(0, 80)))
      .join(', ');
    throw badRequest(`invalid keys: ${shown}${bad.length > 5 ? ` and ${bad.length - 5} more` : ''}`);
  }
  if (keys.length === 0 && b.title === undefined) throw badRequest('give "keys" (non-empty) or "title"');
  let bytesPerSecond = DEFAULT_FILL_RATE;
  if (b.bytesPerSecond !== undefined) {
    try {
      bytesPerSecond = parseBytes(b.bytesPerSecond);
    } catch {
      bytesPerSecond = 0;
    }
    if (!(bytesPerSecond > 0)) throw badRequest('"bytesPerSecond" must be a positive number or a size like "50MB"');
  }
  return { keys, title: b.title, bytesPerSecond, wait: b.wait === true, source: b.source ?? { kind: 'upstream' } };
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

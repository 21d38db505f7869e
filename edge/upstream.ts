import type { Readable } from 'node:stream';
import { Agent, errors as undiciErrors, request } from 'undici';
import { ErrorCodes, OcdnError, isOcdnError } from '../common/errors.ts';
import { errorMessage } from '../common/http.ts';
import { signPath, withPathToken } from '../common/token.ts';
import type { OriginReader } from '../origin/reader.ts';
import type { UpstreamKind } from './metrics.ts';

/**
 * What a miss brings back from the next tier: the head, and the body as it arrives. The cache
 * reads the body once, passing it on while it comes, and destroys it when it gives up.
 */
export interface UpstreamObject {
  body: Readable;
  /** Bytes the body will have (Content-Length), when the upstream says. */
  size: number | undefined;
  /** SHA-256 hex of the body as the upstream declares it (S3 metadata, or the parent's ETag). */
  sha256: string | undefined;
  contentType: string | undefined;
  /** Seconds the object had already spent in the upstream's cache (a parent edge's Age). */
  ageSec: number;
  /** CMSD (edge/cmsd.ts) as the upstream gave it: Static from S3 metadata or the parent's header, Dynamic from a parent. */
  cmsd: UpstreamCmsd;
}

export interface UpstreamCmsd {
  static: string | undefined;
  dynamic: string | undefined;
}

/**
 * The next tier on a miss. Failures are OcdnErrors with the origin reader's three codes, so
 * the cache decides on code alone: NOT_FOUND (negative-cache), ORIGIN_TIMEOUT (504),
 * ORIGIN_UNAVAILABLE (502).
 */
export interface Upstream {
  readonly kind: UpstreamKind;
  /** `path` is the checked request path, `/vod/...`. */
  get(path: string): Promise<UpstreamObject>;
  /** Resolves when the upstream answers at all (readiness). */
  ping(): Promise<void>;
  close(): Promise<void>;
}

/** Misses go to the S3 bucket through the origin reader (its retries and timeouts). */
export class S3Upstream implements Upstream {
  readonly kind = 's3' as const;
  constructor(private readonly reader: OriginReader) {}

  async get(path: string): Promise<UpstreamObject> {
    const obj = await this.reader.getObjectStream(path.slice(1));
    return {
      body: obj.body,
      size: obj.size,
      sha256: obj.sha256,
      contentType: obj.contentType,
      ageSec: 0,
      cmsd: { static: obj.cmsdStatic, dynamic: undefined },
    };
  }

  async ping(): Promise<void> {
    await this.reader.ping();
  }

  async close(): Promise<void> {}
}

const TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT']);

/**
 * Shield tier: misses go to another edge, same path. The parent checks tokens like any edge,
 * so a child that knows the token secret signs its own short-lived token; the client's token
 * never leaves this edge (the fetch is shared by every waiting client, not one of them).
 *
 * With `peer`, the same client reads a peer edge's fill source instead (`{pathPrefix}/vod/...`
 * with `authorization`), for a planned fill from the site rather than from upstream.
 */
export class ParentUpstream implements Upstream {
  readonly kind: 'parent' | 'peer';
  private readonly agent: Agent;

  constructor(
    private readonly parentUrl: string,
    private readonly opts: {
      timeoutMs: number;
      tokenSecret: string | null;
      edgeId: string;
      peer?: { pathPrefix: string; authorization: string };
    },
  ) {
    this.kind = opts.peer ? 'peer' : 'parent';
    this.parentUrl = parentUrl.replace(/\/+$/, '');
    this.agent = new Agent({
      connections: 64,
      headersTimeout: opts.timeoutMs,
      bodyTimeout: opts.timeoutMs,
      connectTimeout: Math.min(opts.timeoutMs, 3_000),
    });
  }

  async get(path: string): Promise<UpstreamObject> {
    const peer = this.opts.peer;
    const token = this.opts.tokenSecret && !peer ? signPath(this.opts.tokenSecret, path, Math.floor(Date.now() / 1000) + 300) : undefined;
    const url = peer ? `${this.parentUrl}${peer.pathPrefix}${path}` : withPathToken(this.parentUrl, path, token);
    const headers: Record<string, string> = { 'x-ocdn-child': this.opts.edgeId };
    if (peer) headers.authorization = peer.authorization;
    try {
      const res = await request(url, { dispatcher: this.agent, headers });
      if (res.statusCode === 200) {
        const etag = header(res.headers.etag);
        const age = Number(header(res.headers.age) ?? 0);
        const length = Number(header(res.headers['content-length']));
        return {
          body: res.body,
          size: Number.isSafeInteger(length) && length >= 0 ? length : undefined,
          sha256: etag ? etag.replace(/^W\//, '').replace(/"/g, '') : undefined,
          contentType: header(res.headers['content-type']),
          ageSec: Number.isFinite(age) && age > 0 ? Math.floor(age) : 0,
          cmsd: { static: header(res.headers['cmsd-static']), dynamic: header(res.headers['cmsd-dynamic']) },
        };
      }
      const text = errorMessage(await res.body.text().catch(() => '')).slice(0, 200);
      if (res.statusCode === 404) throw new OcdnError(ErrorCodes.NOT_FOUND, `not found at parent: ${path}`);
      const code = res.statusCode === 504 ? ErrorCodes.ORIGIN_TIMEOUT : ErrorCodes.ORIGIN_UNAVAILABLE;
      throw new OcdnError(code, `parent ${this.parentUrl} answered ${res.statusCode} for ${path}${text ? `: ${text}` : ''}`, {
        details: { status: res.statusCode },
      });
    } catch (err) {
      throw this.classify(path, err);
    }
  }

  async ping(): Promise<void> {
    try {
      const res = await request(`${this.parentUrl}/healthz`, { dispatcher: this.agent });
      await res.body.dump();
      if (res.statusCode !== 200) throw new OcdnError(ErrorCodes.ORIGIN_UNAVAILABLE, `parent ${this.parentUrl} /healthz answered ${res.statusCode}`);
    } catch (err) {
      throw this.classify('/healthz', err);
    }
  }

  async close(): Promise<void> {
    await this.agent.close().catch(() => undefined);
  }

  private classify(path: string, err: unknown): OcdnError {
    if (isOcdnError(err)) return err;
    const code = (err as { code?: string }).code;
    if (code !== undefined && TIMEOUT_CODES.has(code)) {
      return new OcdnError(ErrorCodes.ORIGIN_TIMEOUT, `parent ${this.parentUrl} timed out after ${this.opts.timeoutMs} ms for ${path}`, { cause: err });
    }
    const why = code ?? (err instanceof undiciErrors.UndiciError ? err.name : err instanceof Error ? err.message : String(err));
    return new OcdnError(ErrorCodes.ORIGIN_UNAVAILABLE, `parent ${this.parentUrl} unreachable for ${path}: ${why}`, { cause: err });
  }
}

function header(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

import { request, type Dispatcher } from 'undici';
import type { SteerResponse, SteeredEdge } from '../common/contracts.ts';
import { type ErrorCode, ErrorCodes, OcdnError } from '../common/errors.ts';

export interface SteerRequest {
  title: string;
  sessionId: string;
  region: string;
  isp: string;
}

/** Where a session gets its ranked list of edges (master playlist URLs) from. */
export interface EdgeSource {
  steer(req: SteerRequest, signal?: AbortSignal): Promise<SteeredEdge[]>;
}

/**
 * `--edge URL[,URL…]`: a fixed ranked list, no tokens (edges started with tokens off). Edge
 * ids come from each edge's /healthz (probed once, shared by all sessions) so failover events
 * name edges the way the edges themselves do; an edge that cannot be asked is named host:port.
 */
export class StaticEdges implements EdgeSource {
  private readonly bases: string[];
  private readonly ids = new Map<string, string>();
  private probing: Promise<void> | undefined;
  private probedAt = Number.NEGATIVE_INFINITY;

  constructor(
    urls: string[],
    private readonly dispatcher?: Dispatcher,
  ) {
    if (urls.length === 0) throw new OcdnError(ErrorCodes.CONFIG, 'at least one --edge URL is needed');
    this.bases = urls.map((u) => u.replace(/\/+$/, ''));
  }

  private async probe(): Promise<void> {
    await Promise.allSettled(
      this.bases
        .filter((b) => !this.ids.has(b))
        .map(async (base) => {
          const res = await request(`${base}/healthz`, { dispatcher: this.dispatcher, signal: AbortSignal.timeout(1_000) });
          const body = (await res.body.json().catch(() => undefined)) as { id?: unknown } | undefined;
          if (res.statusCode === 200 && typeof body?.id === 'string' && /^[A-Za-z0-9._-]{1,64}$/.test(body.id)) this.ids.set(base, body.id);
        }),
    );
  }

  async steer(req: SteerRequest): Promise<SteeredEdge[]> {
    if (this.ids.size < this.bases.length && performance.now() - this.probedAt > 5_000) {
      this.probing ??= this.probe().finally(() => {
        this.probedAt = performance.now();
        this.probing = undefined;
      });
      await this.probing;
    }
    return this.bases.map((base, i) => ({
      id: this.ids.get(base) ?? new URL(base).host,
      url: `${base}/vod/${encodeURIComponent(req.title)}/master.m3u8`,
      region: req.region,
      reason: `static #${i + 1}`,
      score: this.bases.length - i,
    }));
  }
}

/** Bound on a refusal's reason (the QoE error event's string fields are bounded to this). */
export const MAX_REASON_LENGTH = 512;

const KNOWN_CODES = new Set<string>(Object.values(ErrorCodes));

/**
 * Steering answered, and the answer was no: the HTTP status, steering's error code, and its
 * reason in its own words. 4xx (unknown title, bad request) will not change by asking again;
 * 5xx (no healthy edge, no catalog yet) may.
 */
export class SteeringRefusal extends OcdnError {
  constructor(
    readonly status: number,
    readonly reason: string,
    code: ErrorCode,
  ) {
    super(code, `steering refused (${status}): ${reason}`);
    this.name = 'SteeringRefusal';
  }

  get retryable(): boolean {
    return this.status >= 500 || this.status === 429 || this.status === 408;
  }

  /** From a non-200 answer's body: JSON {error, reason|message} (flat or nested under error), else its text. */
  static from(status: number, text: string): SteeringRefusal {
    let code: string | undefined;
    let reason: string | undefined;
    try {
      const body = JSON.parse(text) as Record<string, unknown>;
      const inner = typeof body.error === 'object' && body.error !== null ? (body.error as Record<string, unknown>) : body;
      code = [inner.code, inner.error, body.error].find((c): c is string => typeof c === 'string');
      reason = [inner.reason, inner.message, body.reason, body.message].find((r): r is string => typeof r === 'string');
    } catch {
      // not JSON: the text is the reason
    }
    reason = (reason ?? text).replace(/\s+/g, ' ').trim() || `HTTP ${status}`;
    if (reason.length > MAX_REASON_LENGTH) reason = `${reason.slice(0, MAX_REASON_LENGTH - 1)}…`;
    const known = code !== undefined && KNOWN_CODES.has(code) ? (code as ErrorCode) : undefined;
    return new SteeringRefusal(status, reason, known ?? (status === 404 ? ErrorCodes.NOT_FOUND : status < 500 ? ErrorCodes.BAD_REQUEST : ErrorCodes.NO_EDGE));
  }
}

/** `--steering URL`: GET /v1/steer per session (and again when its list is used up). */
export class SteeringClient implements EdgeSource {
  constructor(
    private readonly baseUrl: string,
    private readonly dispatcher?: Dispatcher,
    private readonly timeoutMs = 3_000,
  ) {}

  async steer(req: SteerRequest, signal?: AbortSignal): Promise<SteeredEdge[]> {
    const q = new URLSearchParams({ title: req.title, region: req.region, isp: req.isp, session: req.sessionId });
    const url = `${this.baseUrl.replace(/\/+$/, '')}/v1/steer?${q}`;
    const timeout = AbortSignal.timeout(this.timeoutMs);
    const res = await request(url, {
      method: 'GET',
      dispatcher: this.dispatcher,
      signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
      headers: { accept: 'application/json' },
    });
    const text = await res.body.text();
    if (res.statusCode !== 200) throw SteeringRefusal.from(res.statusCode, text.slice(0, 4_096));
    let body: SteerResponse;
    try {
      body = JSON.parse(text) as SteerResponse;
    } catch {
      throw new OcdnError(ErrorCodes.NO_EDGE, 'steering answered with invalid JSON');
    }
    if (!Array.isArray(body.edges) || body.edges.length === 0) throw new OcdnError(ErrorCodes.NO_EDGE, `steering has no edge for ${req.title}`);
    for (const e of body.edges) {
      if (typeof e?.url !== 'string' || typeof e.id !== 'string') throw new OcdnError(ErrorCodes.NO_EDGE, 'steering answer has an edge without id/url');
    }
    return body.edges;
  }
}

import { request, type Dispatcher } from 'undici';
import type { SteerResponse, SteeredEdge } from '../common/contracts.ts';
import { ErrorCodes, OcdnError } from '../common/errors.ts';

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
    if (res.statusCode !== 200) throw new OcdnError(ErrorCodes.NO_EDGE, `steering answered ${res.statusCode}: ${text.slice(0, 200).trim()}`);
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

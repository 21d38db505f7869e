import type { CatalogTitle, SteeredEdge } from '../common/contracts.ts';
import { ErrorCodes, OcdnError } from '../common/errors.ts';
import { syntheticTitle, titleId } from '../origin/catalog.ts';
import { getLadder } from '../origin/ladder.ts';
import { buildMasterPlaylist, buildMediaPlaylist } from '../origin/playlists.ts';
import { segmentDurations, segmentSizes } from '../origin/synthetic.ts';
import { sleepOn, type Clock } from './clock.ts';
import { bytesBetween, transferEnd, type Trace } from './network.ts';
import { hash32 } from './rng.ts';
import type { EdgeSource, SteerRequest } from './steer.ts';
import { TransportError, type FetchRequest, type FetchResult, type Transport } from './transport.ts';

/** 2025-01-01T00:00:00Z: virtual event timestamps start here so they are the same every run. */
export const VIRTUAL_EPOCH_MS = Date.UTC(2025, 0, 1);

interface Timer {
  at: number;
  seq: number;
  fn: () => void;
  cancelled: boolean;
}

/**
 * Discrete-event clock. Timers fire in (time, creation order); after each one the run loop
 * yields to a macrotask so every promise continuation the timer released runs (and schedules
 * its own timers) before the next timer fires. Sessions do no real I/O in virtual mode, so
 * this order, and therefore every event, is a function of the inputs alone.
 */
export class VirtualClock implements Clock {
  private t = 0;
  private seq = 0;
  private readonly heap: Timer[] = [];
  fired = 0;

  constructor(readonly epochMs: number = VIRTUAL_EPOCH_MS) {}

  now(): number {
    return this.t;
  }

  eventTime(atMs: number): number {
    return this.epochMs + atMs;
  }

  timer(atMs: number, fn: () => void): () => void {
    const tm: Timer = { at: Math.max(atMs, this.t), seq: this.seq++, fn, cancelled: false };
    this.push(tm);
    return () => {
      tm.cancelled = true;
    };
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return sleepOn(this, ms, signal);
  }

  /** Runs until no timer is left (every session has ended). */
  async run(): Promise<void> {
    for (;;) {
      await new Promise<void>((resolve) => setImmediate(resolve));
      const next = this.pop();
      if (!next) return;
      this.t = next.at;
      this.fired++;
      next.fn();
    }
  }

  private less(a: Timer, b: Timer): boolean {
    return a.at < b.at || (a.at === b.at && a.seq < b.seq);
  }

  private push(tm: Timer): void {
    const h = this.heap;
    h.push(tm);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(h[i]!, h[p]!)) break;
      [h[i], h[p]] = [h[p]!, h[i]!];
      i = p;
    }
  }

  private pop(): Timer | undefined {
    const h = this.heap;
    while (h.length > 0) {
      const top = h[0]!;
      const last = h.pop()!;
      if (h.length > 0) {
        h[0] = last;
        let i = 0;
        for (;;) {
          const l = 2 * i + 1;
          const r = l + 1;
          let m = i;
          if (l < h.length && this.less(h[l]!, h[m]!)) m = l;
          if (r < h.length && this.less(h[r]!, h[m]!)) m = r;
          if (m === i) break;
          [h[i], h[m]] = [h[m]!, h[i]!];
          i = m;
        }
      }
      if (!top.cancelled) return top;
    }
    return undefined;
  }
}

/** A fault on a virtual edge between two virtual times: refuse connections, answer 503, or hang. */
export interface VirtualFault {
  fromMs: number;
  toMs?: number;
  kind: 'down' | '503' | 'hang';
}

export interface VirtualEdgeSpec {
  id: string;
  region?: string;
  faults?: VirtualFault[];
}

export interface VirtualCdnOptions {
  /** Synthetic titles title-0001…; default 20. */
  titles?: number;
  durationSec?: number;
  segmentSec?: number;
  ladder?: string;
  /** Edge count or explicit edges; default 2. */
  edges?: number | VirtualEdgeSpec[];
  /** Path (e.g. /vod/title-0001/master.m3u8) → what to answer instead, for odd-playlist tests. */
  overrides?: Record<string, { status?: number; body?: string; bytes?: number }>;
  /** Added to the TTFB of a cache miss (origin fetch), ms; default 0 keeps transfers closed-form. */
  missPenaltyMs?: number;
}

export interface VirtualResponse {
  status: number;
  headers: Record<string, string>;
  text?: string;
  bytes: number;
}

const SEGMENT_PATH = /^\/vod\/([A-Za-z0-9._-]+)\/([A-Za-z0-9._-]+)\/seg-(\d+)\.(ts|m4s)$/;
const MEDIA_PATH = /^\/vod\/([A-Za-z0-9._-]+)\/([A-Za-z0-9._-]+)\/index\.m3u8$/;
const MASTER_PATH = /^\/vod\/([A-Za-z0-9._-]+)\/master\.m3u8$/;

/**
 * Edges, origin and content in memory: the same playlists and segment sizes the origin seeds
 * (origin/ builders, origin/synthetic sizes), served by edges that remember what they have
 * served (X-Cache HIT on a repeat) and can be faulted on a schedule.
 */
export class VirtualCdn {
  readonly titles: CatalogTitle[];
  readonly edges: VirtualEdgeSpec[];
  private readonly byId = new Map<string, CatalogTitle>();
  private readonly masters = new Map<string, string>();
  private readonly medias = new Map<string, string>();
  private readonly sizes = new Map<string, number[]>();
  private readonly seen = new Map<string, Set<string>>();
  private readonly overrides: NonNullable<VirtualCdnOptions['overrides']>;
  readonly missPenaltyMs: number;

  constructor(opts: VirtualCdnOptions = {}) {
    const ladder = getLadder(opts.ladder ?? 'apple');
    const count = opts.titles ?? 20;
    const durationSec = opts.durationSec ?? 600;
    const segmentSec = opts.segmentSec ?? 4;
    this.titles = [];
    for (let n = 1; n <= count; n++) {
      const t = syntheticTitle({ id: titleId(n), rank: n, durationSec, segmentSec, ladder });
      this.titles.push(t);
      this.byId.set(t.id, t);
    }
    const edges = opts.edges ?? 2;
    this.edges = typeof edges === 'number' ? Array.from({ length: edges }, (_, i) => ({ id: `vedge-${i + 1}` })) : edges;
    for (const e of this.edges) this.seen.set(e.id, new Set());
    this.overrides = opts.overrides ?? {};
    this.missPenaltyMs = opts.missPenaltyMs ?? 0;
  }

  masterUrl(edgeId: string, title: string): string {
    return `http://${edgeId}.virtual/vod/${title}/master.m3u8`;
  }

  fault(edgeId: string, atMs: number): VirtualFault | undefined {
    const e = this.edges.find((x) => x.id === edgeId);
    return e?.faults?.find((f) => atMs >= f.fromMs && (f.toMs === undefined || atMs < f.toMs));
  }

  /** The first 'down' fault starting in (from, to) on an edge: a transfer in flight then is cut. */
  cutBetween(edgeId: string, from: number, to: number): number | undefined {
    const e = this.edges.find((x) => x.id === edgeId);
    let first: number | undefined;
    for (const f of e?.faults ?? []) if (f.kind === 'down' && f.fromMs > from && f.fromMs < to && (first === undefined || f.fromMs < first)) first = f.fromMs;
    return first;
  }

  private sizesOf(t: CatalogTitle, rendition: string): number[] | undefined {
    const key = `${t.id}/${rendition}`;
    let s = this.sizes.get(key);
    if (!s) {
      const r = t.renditions.find((x) => x.name === rendition);
      if (!r) return undefined;
      s = segmentSizes({ title: t.id, rendition, bitrate: r.averageBandwidth, durationSec: t.durationSec, segmentSec: t.segmentSec });
      this.sizes.set(key, s);
    }
    return s;
  }

  /** What the edge answers for a GET of `path` (no query). */
  respond(edgeId: string, path: string, range: { offset: number; length: number } | undefined): VirtualResponse {
    const headers: Record<string, string> = { 'x-edge-id': edgeId };
    const ov = this.overrides[path];
    if (ov) {
      const text = ov.body;
      const size = ov.bytes ?? (text === undefined ? 0 : Buffer.byteLength(text));
      if (range && (ov.status ?? 200) === 200) {
        const bytes = Math.max(0, Math.min(range.length, size - range.offset));
        return { status: 206, headers: { ...headers, 'x-cache': 'HIT', 'content-length': String(bytes) }, bytes };
      }
      return { status: ov.status ?? 200, headers: { ...headers, 'x-cache': 'HIT', 'content-length': String(size) }, text, bytes: size };
    }
    const seen = this.seen.get(edgeId)!;
    const cache = (key: string): string => {
      if (seen.has(key)) return 'HIT';
      seen.add(key);
      return 'MISS';
    };
    let m = MASTER_PATH.exec(path);
    if (m) {
      const t = this.byId.get(m[1]!);
      if (!t) return { status: 404, headers, bytes: 0 };
      let text = this.masters.get(t.id);
      if (!text) {
        text = buildMasterPlaylist(t.renditions);
        this.masters.set(t.id, text);
      }
      return { status: 200, headers: { ...headers, 'x-cache': cache(path) }, text, bytes: Buffer.byteLength(text) };
    }
    m = MEDIA_PATH.exec(path);
    if (m) {
      const t = this.byId.get(m[1]!);
      if (!t?.renditions.some((r) => r.name === m![2])) return { status: 404, headers, bytes: 0 };
      let text = this.medias.get(t.id);
      if (!text) {
        text = buildMediaPlaylist(segmentDurations(t.durationSec, t.segmentSec));
        this.medias.set(t.id, text);
      }
      return { status: 200, headers: { ...headers, 'x-cache': cache(path) }, text, bytes: Buffer.byteLength(text) };
    }
    m = SEGMENT_PATH.exec(path);
    if (m) {
      const t = this.byId.get(m[1]!);
      const sizes = t && this.sizesOf(t, m[2]!);
      const size = sizes?.[Number(m[3])];
      if (size === undefined) return { status: 404, headers, bytes: 0 };
      const bytes = range ? Math.max(0, Math.min(range.length, size - range.offset)) : size;
      return { status: range ? 206 : 200, headers: { ...headers, 'x-cache': cache(path), 'content-length': String(bytes) }, bytes };
    }
    return { status: 404, headers, bytes: 0 };
  }
}

/** Ranks virtual edges per title by rendezvous hashing, leaving out edges that have been down a while (as missed heartbeats would). */
export class VirtualSteering implements EdgeSource {
  constructor(
    private readonly cdn: VirtualCdn,
    private readonly clock: Clock,
    /** How long an edge must be down before steering stops offering it. */
    private readonly detectMs = 3_000,
  ) {}

  async steer(req: SteerRequest): Promise<SteeredEdge[]> {
    const now = this.clock.now();
    const alive = this.cdn.edges.filter((e) => {
      const f = this.cdn.fault(e.id, now);
      return !(f && f.kind === 'down' && now - f.fromMs >= this.detectMs);
    });
    const pool = alive.length > 0 ? alive : this.cdn.edges;
    return pool
      .map((e) => ({ e, score: hash32('hrw', req.title, e.id) }))
      .sort((a, b) => b.score - a.score || (a.e.id < b.e.id ? -1 : 1))
      .map(({ e, score }) => ({ id: e.id, url: this.cdn.masterUrl(e.id, req.title), region: e.region ?? req.region, reason: 'hrw', score }));
  }
}

/** Abandonment and progress are checked at this step of virtual time during a transfer. */
const PROGRESS_STEP_MS = 200;

/**
 * Closed-form transfers: TTFB = RTT (+ miss penalty), then the body at the trace's rate from
 * the first byte; download time = TTFB + the time the trace needs to carry the bytes. One
 * sleep per request: the progress callback (which must depend only on its argument) is
 * evaluated at 200 ms checkpoints up front to find when, if ever, the session would abandon.
 */
export class VirtualTransport implements Transport {
  constructor(
    private readonly cdn: VirtualCdn,
    private readonly clock: Clock,
    private readonly trace: Trace,
    /** Session time at which the trace starts. */
    private readonly traceOrigin: number,
    private readonly rttMs: number,
  ) {}

  async fetch(req: FetchRequest): Promise<FetchResult> {
    const t0 = this.clock.now();
    let u: URL;
    try {
      u = new URL(req.url);
    } catch {
      throw new OcdnError(ErrorCodes.BAD_REQUEST, `bad URL ${req.url}`);
    }
    const edgeId = u.hostname.replace(/\.virtual$/, '');
    if (!this.cdn.edges.some((e) => e.id === edgeId)) {
      await this.clock.sleep(this.rttMs, req.signal);
      throw new TransportError('connect', `no such virtual host ${u.host}`);
    }
    const fault = this.cdn.fault(edgeId, t0);
    if (fault?.kind === 'down') {
      await this.clock.sleep(this.rttMs, req.signal);
      throw new TransportError('connect', `connect ECONNREFUSED ${u.host}`);
    }
    if (fault?.kind === 'hang') {
      await this.clock.sleep(req.timeoutMs, req.signal);
      throw new TransportError('timeout', `no response from ${u.host} within ${req.timeoutMs} ms`);
    }
    const res: VirtualResponse =
      fault?.kind === '503' ? { status: 503, headers: { 'x-edge-id': edgeId }, bytes: 0 } : this.cdn.respond(edgeId, u.pathname, req.range);
    const ttfb = this.rttMs + (res.headers['x-cache'] === 'MISS' ? this.cdn.missPenaltyMs : 0);
    const firstByte = t0 + ttfb;
    const end = res.bytes > 0 ? transferEnd(this.trace, firstByte - this.traceOrigin, res.bytes) + this.traceOrigin : firstByte;

    let stopAt = end;
    let abandoned = false;
    let bytesAtStop = res.bytes;
    if (req.onProgress && res.status < 300 && end > firstByte) {
      let tk = firstByte;
      let got = 0;
      const p = { elapsedMs: 0, ttfbMs: ttfb, bytes: 0, totalBytes: res.bytes as number | undefined };
      for (;;) {
        const next = tk + PROGRESS_STEP_MS;
        if (next >= end) break;
        got += bytesBetween(this.trace, tk - this.traceOrigin, next - this.traceOrigin);
        tk = next;
        p.elapsedMs = tk - t0;
        p.bytes = Math.floor(got);
        if (req.onProgress(p)) {
          stopAt = tk;
          abandoned = true;
          bytesAtStop = Math.floor(got);
          break;
        }
      }
    }
    const cut = this.cdn.cutBetween(edgeId, t0, stopAt);
    if (cut !== undefined) {
      await this.clock.sleep(cut - t0, req.signal);
      throw new TransportError('reset', `connection to ${u.host} reset`);
    }
    await this.clock.sleep(stopAt - t0, req.signal);
    const headers = res.headers;
    return {
      status: res.status,
      header: (name) => headers[name.toLowerCase()],
      bytes: bytesAtStop,
      text: req.wantText ? res.text : undefined,
      ttfbMs: ttfb,
      totalMs: stopAt - t0,
      abandoned,
    };
  }
}

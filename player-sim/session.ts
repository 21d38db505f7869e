import type { SteeredEdge } from '../common/contracts.ts';
import { describeError, ErrorCodes, isOcdnError, OcdnError } from '../common/errors.ts';
import type { EventSink, QoeEvent, SegmentEvent, SessionEndEvent } from '../telemetry/events.ts';
import { reportedSeconds, videoStartMs } from '../telemetry/qoe-math.ts';
import { abandonTo, ThroughputEstimator, type Abr, type AbrState, type CmsdHint, type LastDownload } from './abr/index.ts';
import { parseCmsdDynamic } from '../edge/cmsd.ts';
import type { AbandonInput } from './abr/abandon.ts';
import { isAborted, type Clock } from './clock.ts';
import { cmcdHeaders, relativeRef, withCmcdQuery, type CmcdData, type CmcdMode } from './cmcd.ts';
import { SessionEmitter } from './emitter.ts';
import { parseMasterOrMedia, parseMedia, segmentAt, type MediaInfo, type MediaSegment, type Variant } from './playlist.ts';
import { SteeringRefusal, type EdgeSource } from './steer.ts';
import { TransportError, type FetchResult, type ObjectKind, type Progress, type Transport } from './transport.ts';

export type ExitReason = SessionEndEvent['exitReason'];
export type CacheStatus = SegmentEvent['cacheStatus'];

export interface SessionConfig {
  index: number;
  sessionId: string;
  title: string;
  region: string;
  isp: string;
  device: string;
  /** Media seconds the viewer watches before leaving; Infinity = to the end. */
  watchS: number;
  /** Buffer needed to start playing, seconds. */
  startThresholdS: number;
  /** Buffer needed to resume after a stall, seconds. */
  resumeThresholdS: number;
  /** The player stops fetching when the next segment would take the buffer past this. */
  maxBufferS: number;
  /** Not playing by then (session ms) → start failure. */
  startTimeoutMs: number;
  /** Until response headers, per request. */
  requestTimeoutMs: number;
  /** After startup: no edge served anything for this long → the session ends with an error. */
  giveUpMs: number;
  heartbeatMs: number;
  cmcd: CmcdMode;
  recordSegments: boolean;
  /** Show the ABR the serving edge's CMSD-Dynamic etp/du (abr/cmsd-hint.ts); default off. */
  abrCmsd?: boolean;
}

export interface SessionEnv {
  clock: Clock;
  transport: Transport;
  edges: EdgeSource;
  sink: EventSink;
  abr: Abr;
  /** Feeds event ids; the same key + session id give the same ids. */
  runKey: string;
  onEvent?: (e: QoeEvent) => void;
}

export interface EdgeUsage {
  bytes: number;
  requests: number;
  segments: number;
  hits: number;
  hitBytes: number;
}

export interface SegmentRecord {
  index: number;
  rendition: string;
  bitrate: number;
  bytes: number;
  requestMs: number;
  ttfbMs: number;
  downloadMs: number;
  throughputBps: number;
  edgeId: string;
  cacheStatus: CacheStatus;
  abandoned: boolean;
  /** Buffer after the segment was appended (seconds); NaN for abandoned attempts. */
  bufferS: number;
}

export interface SessionResult {
  index: number;
  sessionId: string;
  title: string;
  started: boolean;
  vstMs: number | undefined;
  playedS: number;
  stalledS: number;
  stalls: number;
  /** Time-weighted over what was played, bits/s. */
  avgBitrate: number;
  switches: number;
  bytes: number;
  exitReason: ExitReason;
  failovers: number;
  errors: { code: string; message: string }[];
  /** Steering said no, and that ended the session: its status, error code and reason. */
  refused?: Refusal;
  startMs: number;
  endMs: number;
  edges: Record<string, EdgeUsage>;
  segments?: SegmentRecord[];
  sinkErrors: number;
}

export interface Refusal {
  status: number;
  code: string;
  reason: string;
}

/** An HTTP status the session cannot use. */
export class HttpStatusError extends Error {
  constructor(
    readonly status: number,
    readonly url: string,
  ) {
    super(`HTTP ${status} for ${url.split('?')[0]}`);
    this.name = 'HttpStatusError';
  }
}

/** Worth trying another edge for: the edge (or the way to it) failed, not the request. */
function failoverReason(err: unknown): string | undefined {
  if (err instanceof TransportError) return `${err.kind}: ${err.message}`;
  // 403: a token steering signed may have expired or be for another edge; re-steering fixes it.
  if (err instanceof HttpStatusError && (err.status >= 500 || err.status === 403 || err.status === 429)) return `http ${err.status}`;
  return undefined;
}

function cacheStatusOf(v: string | undefined): CacheStatus {
  const s = v?.trim().toUpperCase();
  return s === 'HIT' || s === 'MISS' || s === 'STALE' || s === 'COALESCED' ? s : 'UNKNOWN';
}

const EPS = 1e-6;

interface Appended {
  startS: number;
  durationS: number;
  bitrate: number;
  rendition: string;
}

/**
 * One viewer. Control flow is a single async loop (steer → master → media → per segment: ABR
 * → download → append); playback is modelled in closed form between those steps: the playhead
 * moves at 1× session time while playing, and timers on the session clock mark the exact
 * moments the buffer runs dry (stall), the viewer leaves, and heartbeats fall due. Every wait
 * goes through the Clock and every request through the Transport, so the same code runs over
 * sockets or in virtual time.
 */
class Session {
  private readonly clock: Clock;
  private readonly em: SessionEmitter;
  private readonly estimator = new ThroughputEstimator();
  private readonly stop = new AbortController();
  private exitReason: ExitReason | undefined;
  private readonly t0: number;

  // playback
  private position = 0;
  private bufferEnd = 0;
  private started = false;
  private playing = false;
  private lastT: number;
  private stallStart: number | undefined;
  private stalledMs = 0;
  private stalls = 0;
  private vstMs: number | undefined;
  private targetS: number;
  private readonly appended: Appended[] = [];
  private rebufferedSinceDecision = false;

  // edges and playlists
  private edges: SteeredEdge[] = [];
  private edgeIdx = -1;
  private edgeId = '';
  private variants: Variant[] = [];
  /** The edge entry the variants were read from. */
  private masterFrom: SteeredEdge | undefined;
  private readonly medias = new Map<number, MediaInfo>();
  private lastInitKey: string | undefined;
  private lastProgressT: number;
  private backoffMs = 0;

  // accounting
  private switches = 0;
  private failovers = 0;
  private bytes = 0;
  private readonly errors: { code: string; message: string }[] = [];
  /** The last steering answer was a refusal (cleared by the next list of edges). */
  private pendingRefusal: SteeringRefusal | undefined;
  private refused: Refusal | undefined;
  private readonly edgeUsage: Record<string, EdgeUsage> = {};
  private readonly records: SegmentRecord[] | undefined;
  private lastDownload: LastDownload | undefined;
  private abandonNote: AbrState['abandoned'];
  /** From the last segment's CMSD-Dynamic, with abrCmsd on; dropped when the edge changes. */
  private cmsdHint: CmsdHint | undefined;
  /** The first media playlist loaded: segment timing and total length (the same in every rendition). */
  private timeline: MediaInfo | undefined;

  // timers
  private cancelStall: (() => void) | undefined;
  private cancelLeave: (() => void) | undefined;
  private cancelHeartbeat: (() => void) | undefined;
  private cancelStartTimeout: (() => void) | undefined;
  private leaveArmed = false;

  constructor(
    private readonly env: SessionEnv,
    private readonly cfg: SessionConfig,
  ) {
    this.clock = env.clock;
    this.t0 = this.clock.now();
    this.lastT = this.t0;
    this.lastProgressT = this.t0;
    this.targetS = cfg.watchS;
    this.records = cfg.recordSegments ? [] : undefined;
    this.em = new SessionEmitter(
      env.sink,
      env.clock,
      env.runKey,
      { sessionId: cfg.sessionId, title: cfg.title, region: cfg.region, isp: cfg.isp, device: cfg.device, abr: env.abr.name },
      env.onEvent,
    );
  }

  /** Ends the session from outside (the run is over). */
  abort(reason: ExitReason = 'aborted'): void {
    this.end(reason);
  }

  private end(reason: ExitReason): void {
    if (this.stop.signal.aborted) return;
    this.exitReason = reason;
    this.stop.abort(reason);
  }

  async run(): Promise<SessionResult> {
    this.em.begin(this.clock.now());
    this.cancelStartTimeout = this.clock.timer(this.t0 + this.cfg.startTimeoutMs, () => {
      if (this.started) return;
      // Still refused when time ran out (no edge, no catalog yet): that refusal is why.
      if (this.pendingRefusal) this.fail(this.pendingRefusal);
      else this.end('start-failure');
    });
    this.scheduleHeartbeat();
    try {
      await this.connect();
      await this.playLoop();
      // Everything is downloaded: wait for the playhead to reach the end (the leave timer).
      await new Promise<void>((resolve) => {
        if (this.stop.signal.aborted) resolve();
        else this.stop.signal.addEventListener('abort', () => resolve(), { once: true });
      });
    } catch (err) {
      if (!isAborted(err)) this.fail(err);
    }
    return this.finish();
  }

  private fail(err: unknown): void {
    const code = isOcdnError(err)
      ? err.code
      : err instanceof HttpStatusError
        ? `HTTP_${err.status}`
        : err instanceof TransportError
          ? `NET_${err.kind.toUpperCase()}`
          : ErrorCodes.INTERNAL;
    const message = describeError(err);
    this.errors.push({ code, message });
    if (err instanceof SteeringRefusal) {
      this.refused = { status: err.status, code, reason: err.reason };
      this.em.emit('error', { code, message, fatal: true, reason: err.reason });
    } else this.em.emit('error', { code, message, fatal: true });
    const noStart = isOcdnError(err, ErrorCodes.NO_EDGE) || err instanceof TransportError || err instanceof SteeringRefusal;
    this.end(!this.started && noStart ? 'start-failure' : 'error');
  }

  // ---- playback model -------------------------------------------------------------------

  private get bufferS(): number {
    return Math.max(0, this.bufferEnd - this.position);
  }

  /** Moves the playhead to time t; emits stall_start at the exact moment the buffer ran dry. */
  private advance(t: number): void {
    if (this.playing && t > this.lastT) {
      const room = this.bufferEnd - this.position;
      const dt = (t - this.lastT) / 1000;
      if (dt < room - EPS) this.position += dt;
      else {
        this.position = this.bufferEnd;
        this.playing = false;
        if (this.bufferEnd < this.targetS - EPS) {
          const at = this.lastT + room * 1000;
          this.stallStart = at;
          this.stalls++;
          this.rebufferedSinceDecision = true;
          this.em.emit('stall_start', { bufferS: 0 }, at);
        }
      }
    }
    this.lastT = Math.max(this.lastT, t);
  }

  private append(t: number, seg: MediaSegment, bitrate: number, rendition: string): void {
    this.advance(t);
    const prev = this.appended[this.appended.length - 1];
    this.appended.push({ startS: this.bufferEnd, durationS: seg.durationS, bitrate, rendition });
    this.bufferEnd += seg.durationS;
    this.lastProgressT = t;
    if (prev && prev.rendition !== rendition) {
      this.switches++;
      this.em.emit('switch', { from: prev.rendition, to: rendition, fromBitrate: prev.bitrate, toBitrate: bitrate }, t);
    }
  }

  /** After the buffer grew: start, resume, and re-arm the stall and leave timers. */
  private afterAppend(t: number, rendition: string, bitrate: number): void {
    const complete = this.bufferEnd >= this.targetS - EPS;
    if (!this.started && (this.bufferS >= this.cfg.startThresholdS - EPS || complete)) {
      this.started = true;
      this.playing = true;
      this.lastT = t;
      this.vstMs = videoStartMs(this.t0, t);
      this.cancelStartTimeout?.();
      this.em.emit('startup', { vstMs: this.vstMs, rendition, bitrate }, t);
    } else if (this.started && !this.playing && (this.bufferS >= this.cfg.resumeThresholdS - EPS || complete)) {
      this.playing = true;
      this.lastT = t;
      const stallMs = t - (this.stallStart ?? t);
      this.stalledMs += stallMs;
      this.stallStart = undefined;
      this.em.emit('stall_end', { stallMs: Math.round(stallMs) }, t);
    }
    this.armTimers(t);
  }

  private armTimers(t: number): void {
    this.cancelStall?.();
    this.cancelStall = undefined;
    if (!this.playing) return;
    if (this.bufferEnd >= this.targetS - EPS) {
      // Enough is buffered to reach the point where the viewer leaves: no stall can come first.
      if (!this.leaveArmed) {
        this.leaveArmed = true;
        const reason: ExitReason = this.targetS === this.cfg.watchS && this.cfg.watchS < this.contentS() - EPS ? 'watch-time' : 'completed';
        this.cancelLeave = this.clock.timer(t + (this.targetS - this.position) * 1000, () => {
          this.advance(this.clock.now());
          this.end(reason);
        });
      }
      return;
    }
    this.cancelStall = this.clock.timer(t + (this.bufferEnd - this.position) * 1000, () => this.advance(this.clock.now()));
  }

  private contentS(): number {
    return this.timeline ? this.timeline.totalS : Number.POSITIVE_INFINITY;
  }

  private scheduleHeartbeat(): void {
    const tick = (at: number) => {
      this.cancelHeartbeat = this.clock.timer(at, () => {
        this.advance(at);
        const cur = this.playingSegment();
        this.em.emit(
          'heartbeat',
          { bufferS: round3(this.bufferS), rendition: cur?.rendition ?? '', bitrate: cur?.bitrate ?? 0, playedS: round3(this.position) },
          at,
        );
        tick(at + this.cfg.heartbeatMs);
      });
    };
    tick(this.t0 + this.cfg.heartbeatMs);
  }

  private playingSegment(): Appended | undefined {
    for (let i = this.appended.length - 1; i >= 0; i--) {
      const a = this.appended[i]!;
      if (a.startS <= this.position + EPS) return a;
    }
    return this.appended[0];
  }

  private avgBitrate(): number {
    if (this.position <= 0) return 0;
    let sum = 0;
    for (const a of this.appended) {
      const overlap = Math.min(a.startS + a.durationS, this.position) - a.startS;
      if (overlap <= 0) break;
      sum += overlap * a.bitrate;
    }
    return sum / this.position;
  }

  // ---- edges, failover, playlists ---------------------------------------------------------

  private async steer(): Promise<void> {
    for (;;) {
      try {
        const edges = await this.env.edges.steer(
          { title: this.cfg.title, sessionId: this.cfg.sessionId, region: this.cfg.region, isp: this.cfg.isp },
          this.stop.signal,
        );
        if (edges.length === 0) throw new OcdnError(ErrorCodes.NO_EDGE, 'steering returned no edges');
        this.pendingRefusal = undefined;
        this.edges = edges;
        this.edgeIdx = 0;
        if (!this.edgeId) this.setEdge(edges[0]!.id);
        return;
      } catch (err) {
        if (isAborted(err) || this.stop.signal.aborted) throw err;
        if (err instanceof SteeringRefusal) {
          // 4xx (unknown title, bad request): asking again gets the same answer.
          if (!err.retryable) throw err;
          this.pendingRefusal = err;
        }
        this.checkGiveUp(err);
        await this.backoff();
      }
    }
  }

  private setEdge(id: string): void {
    this.edgeId = id;
    this.cmsdHint = undefined;
    this.em.edgeId = id;
    this.em.flushStart();
  }

  private async backoff(): Promise<void> {
    this.backoffMs = Math.min(5_000, this.backoffMs === 0 ? 250 : this.backoffMs * 2);
    await this.clock.sleep(this.backoffMs, this.stop.signal);
  }

  /** After startup there is no start timeout: give up once nothing has worked for giveUpMs. */
  private checkGiveUp(err: unknown): void {
    if (this.started && this.clock.now() - this.lastProgressT > this.cfg.giveUpMs) {
      throw new OcdnError(ErrorCodes.NO_EDGE, `no edge could serve for ${Math.round(this.cfg.giveUpMs / 1000)} s (last: ${describeError(err)})`);
    }
  }

  /** Next edge in the list, or a fresh list from steering when this one is used up. */
  private async failover(reason: string, err: unknown): Promise<void> {
    this.checkGiveUp(err);
    const from = this.edgeId;
    this.medias.clear();
    this.lastInitKey = undefined;
    if (this.edgeIdx + 1 < this.edges.length) {
      this.edgeIdx++;
    } else {
      await this.backoff();
      await this.steer();
    }
    const to = this.edges[this.edgeIdx]!.id;
    this.failovers++;
    this.setEdge(to);
    this.em.emit('failover', { fromEdge: from, toEdge: to, reason });
  }

  /** Runs `op` against the current edge, failing over until it works (or the session must end). */
  private async onSomeEdge<T>(op: (edge: SteeredEdge) => Promise<T>): Promise<T> {
    for (;;) {
      if (this.edgeIdx < 0 || this.edgeIdx >= this.edges.length) await this.steer();
      try {
        const out = await op(this.edges[this.edgeIdx]!);
        this.backoffMs = 0;
        return out;
      } catch (err) {
        if (isAborted(err) || this.stop.signal.aborted) throw err;
        const reason = failoverReason(err);
        if (reason === undefined) throw err;
        await this.failover(reason, err);
      }
    }
  }

  private async connect(): Promise<void> {
    await this.onSomeEdge((edge) => this.loadMaster(edge));
  }

  private async loadMaster(edge: SteeredEdge): Promise<void> {
    this.masterFrom = undefined;
    this.medias.clear();
    const res = await this.get(edge.url, 'manifest', { wantText: true });
    const parsed = parseMasterOrMedia(res.text ?? '', edge.url);
    if (parsed.kind === 'media') {
      this.variants = [{ url: edge.url, bitrate: 1, bandwidth: 1, name: 'main' }];
      this.medias.set(0, parsed.media);
    } else {
      this.variants = parsed.variants;
    }
    this.masterFrom = edge;
  }

  private async media(index: number): Promise<MediaInfo> {
    // After a failover the variant URLs still point at the old edge: read the new edge's master.
    const edge = this.edges[this.edgeIdx]!;
    if (this.masterFrom !== edge) await this.loadMaster(edge);
    const have = this.medias.get(index);
    if (have) return have;
    const v = this.variants[index]!;
    const res = await this.get(v.url, 'manifest', { wantText: true });
    const media = parseMedia(res.text ?? '', v.url);
    // Without ENDLIST (live/EVENT) a player would reload the playlist; this simulator plays
    // VOD, so it plays what is listed and treats the last segment as the end.
    this.medias.set(index, media);
    return media;
  }

  // ---- requests --------------------------------------------------------------------------

  private cmcdFor(kind: ObjectKind, extra: Partial<CmcdData>): CmcdData {
    const top = this.variants[this.variants.length - 1]?.bitrate;
    const mtp = this.estimator.measured();
    return {
      bl: this.started ? this.bufferS * 1000 : undefined,
      cid: this.cfg.title,
      mtp: mtp === undefined ? undefined : mtp / 1000,
      ot: kind === 'manifest' ? 'm' : kind === 'init' ? 'i' : 'av',
      sf: 'h',
      sid: this.cfg.sessionId,
      st: 'v',
      su: !this.started || !this.playing,
      tb: top === undefined ? undefined : top / 1000,
      v: 1,
      ...extra,
    };
  }

  private async get(
    url: string,
    kind: ObjectKind,
    opts: { wantText?: boolean; range?: { offset: number; length: number }; cmcd?: Partial<CmcdData>; onProgress?: (p: Progress) => boolean } = {},
  ): Promise<FetchResult> {
    const cmcd = this.cmcdFor(kind, opts.cmcd ?? {});
    const headers: Record<string, string> = this.cfg.cmcd === 'headers' ? cmcdHeaders(cmcd) : {};
    if (opts.range) headers.range = `bytes=${opts.range.offset}-${opts.range.offset + opts.range.length - 1}`;
    const res = await this.env.transport.fetch({
      url: this.cfg.cmcd === 'query' ? withCmcdQuery(url, cmcd) : url,
      kind,
      headers,
      range: opts.range,
      wantText: opts.wantText,
      timeoutMs: this.cfg.requestTimeoutMs,
      signal: this.stop.signal,
      onProgress: opts.onProgress,
    });
    const edgeHeader = res.header('x-edge-id');
    if (edgeHeader && edgeHeader !== this.edgeId) {
      // Learn the edge's real id (static --edge lists only know host:port).
      const cur = this.edges[this.edgeIdx];
      if (cur && cur.id === this.edgeId) cur.id = edgeHeader;
      this.setEdge(edgeHeader);
    }
    const usage = (this.edgeUsage[this.edgeId] ??= { bytes: 0, requests: 0, segments: 0, hits: 0, hitBytes: 0 });
    usage.requests++;
    usage.bytes += res.bytes;
    this.bytes += res.bytes;
    if (res.status >= 400 || (res.status >= 300 && res.status < 400)) throw new HttpStatusError(res.status, url);
    return res;
  }

  // ---- the segment loop --------------------------------------------------------------------

  private abrState(segmentDurationS: number): AbrState {
    const state: AbrState = {
      bitrates: this.variants.map((v) => v.bitrate),
      segmentDurationS,
      bufferS: this.bufferS,
      lastIndex: this.currentIndex(),
      throughputBps: this.estimator.measured(),
      nowS: this.clock.now() / 1000,
      lastDownload: this.lastDownload,
      rebuffered: this.rebufferedSinceDecision || (this.started && !this.playing),
      starting: !this.started,
      abandoned: this.abandonNote,
      ...(this.cmsdHint ? { cmsd: this.cmsdHint } : {}),
    };
    this.lastDownload = undefined;
    this.abandonNote = undefined;
    this.rebufferedSinceDecision = false;
    return state;
  }

  private currentIndex(): number {
    const last = this.appended[this.appended.length - 1];
    return last ? this.variants.findIndex((v) => v.name === last.rendition) : -1;
  }

  private async playLoop(): Promise<void> {
    let retryAt: number | undefined;
    for (;;) {
      // The next segment is the one at the buffer's end (media time), in whatever rendition.
      const tl = this.timeline;
      const nextDur = tl ? segmentAt(tl, this.bufferEnd)?.durationS : undefined;
      if (tl && (nextDur === undefined || this.bufferEnd >= tl.totalS - EPS)) return;

      let index: number;
      if (retryAt !== undefined) {
        index = retryAt;
        retryAt = undefined;
      } else {
        const wait = this.bufferS + (nextDur ?? 0) - this.cfg.maxBufferS;
        if (this.started && wait > EPS) {
          await this.clock.sleep(wait * 1000, this.stop.signal);
          this.advance(this.clock.now());
          continue;
        }
        this.advance(this.clock.now());
        // Before any media playlist the segment duration is unknown; the target duration of
        // the ladder's HLS default (6 s) stands in for the first decision only.
        index = clampIndex(this.env.abr.decide(this.abrState(nextDur ?? 6)), this.variants.length);
      }

      const outcome = await this.onSomeEdge(async () => {
        const media = await this.media(index);
        this.setTimeline(media);
        const seg = segmentAt(media, this.bufferEnd);
        if (!seg || this.bufferEnd >= media.totalS - EPS) return undefined;
        return { seg, abandonedTo: await this.fetchSegment(seg, index) };
      });
      if (!outcome) return;
      if (outcome.abandonedTo !== undefined) {
        this.abandonNote = { fromIndex: this.abandonNote?.fromIndex ?? index, toIndex: outcome.abandonedTo };
        retryAt = outcome.abandonedTo;
        continue;
      }
      const v = this.variants[index]!;
      const now = this.clock.now();
      this.append(now, outcome.seg, v.bitrate, v.name);
      this.afterAppend(now, v.name, v.bitrate);
    }
  }

  private setTimeline(media: MediaInfo): void {
    if (this.timeline) return;
    this.timeline = media;
    this.targetS = Math.min(this.cfg.watchS, media.totalS);
  }

  /** Downloads one segment; returns the rendition to retry at when the download was abandoned. */
  private async fetchSegment(seg: MediaSegment, index: number): Promise<number | undefined> {
    const v = this.variants[index]!;
    if (seg.init) {
      const key = `${seg.init.url}|${seg.init.range?.offset ?? ''}`;
      if (key !== this.lastInitKey) {
        await this.get(seg.init.url, 'init', { range: seg.init.range, cmcd: { br: v.bitrate / 1000 } });
        this.lastInitKey = key;
      }
    }
    const media = this.medias.get(index)!;
    const next = media.segments[seg.index + 1];
    const bitrates = this.variants.map((x) => x.bitrate);
    let abandonChoice: number | undefined;
    const knownTotal = seg.range?.length;
    // One input object reused across checks: virtual runs evaluate this millions of times.
    const input: AbandonInput = { elapsedMs: 0, ttfbMs: 0, bytes: 0, totalBytes: undefined, segmentDurationS: seg.durationS, index, bitrates };
    // Pure in its argument (virtual mode evaluates it ahead of time).
    const onProgress = (p: Progress): boolean => {
      input.elapsedMs = p.elapsedMs;
      input.ttfbMs = p.ttfbMs;
      input.bytes = p.bytes;
      input.totalBytes = p.totalBytes ?? knownTotal;
      abandonChoice = abandonTo(input);
      return abandonChoice !== undefined;
    };
    const requestT = this.clock.now();
    const res = await this.get(seg.url, 'segment', {
      range: seg.range,
      // The lowest rendition is never abandoned: no need to watch its progress.
      onProgress: index > 0 ? onProgress : undefined,
      cmcd: {
        br: v.bitrate / 1000,
        d: seg.durationS * 1000,
        dl: this.started ? this.bufferS * 1000 : undefined,
        nor: next ? relativeRef(seg.url, next.url) : undefined,
      },
    });
    const transferMs = Math.max(0, res.totalMs - res.ttfbMs);
    this.estimator.sample(transferMs, res.bytes);
    if (this.cfg.abrCmsd) this.cmsdHint = cmsdHintOf(res.header('cmsd-dynamic'));
    const throughputBps = transferMs > 0 ? (res.bytes * 8 * 1000) / transferMs : 0;
    const cacheStatus = cacheStatusOf(res.header('x-cache'));
    const usage = this.edgeUsage[this.edgeId]!;
    if (!res.abandoned) {
      usage.segments++;
      if (cacheStatus === 'HIT') {
        usage.hits++;
        usage.hitBytes += res.bytes;
      }
    }
    this.records?.push({
      index: seg.index,
      rendition: v.name,
      bitrate: v.bitrate,
      bytes: res.bytes,
      requestMs: requestT - this.t0,
      ttfbMs: res.ttfbMs,
      downloadMs: res.totalMs,
      throughputBps,
      edgeId: this.edgeId,
      cacheStatus,
      abandoned: res.abandoned,
      bufferS: res.abandoned ? Number.NaN : this.bufferS + seg.durationS,
    });
    if (res.abandoned) return abandonChoice ?? Math.max(0, index - 1);
    this.em.emit('segment', {
      rendition: v.name,
      bitrate: v.bitrate,
      index: seg.index,
      bytes: res.bytes,
      ttfbMs: round3(res.ttfbMs),
      downloadMs: round3(res.totalMs),
      throughputBps: Math.round(throughputBps),
      cacheStatus,
    });
    this.lastDownload = { index, requestS: requestT / 1000, finishS: this.clock.now() / 1000, durationS: seg.durationS };
    return undefined;
  }

  // ---- the end -----------------------------------------------------------------------------

  private finish(): SessionResult {
    const now = this.clock.now();
    this.advance(now);
    for (const c of [this.cancelStall, this.cancelLeave, this.cancelHeartbeat, this.cancelStartTimeout]) c?.();
    let stalledMs = this.stalledMs;
    if (this.started && !this.playing && this.stallStart !== undefined) stalledMs += now - this.stallStart;
    const reason = this.exitReason ?? 'error';
    const avg = this.avgBitrate();
    // The result carries what the session_end event says, so the run summary and the aggregator agree.
    const playedS = reportedSeconds(this.position);
    const stalledS = reportedSeconds(stalledMs / 1000);
    this.em.emit('session_end', {
      playedS,
      stalledS,
      avgBitrate: Math.round(avg),
      switches: this.switches,
      started: this.started,
      exitReason: reason,
      bytes: this.bytes,
    });
    return {
      index: this.cfg.index,
      sessionId: this.cfg.sessionId,
      title: this.cfg.title,
      started: this.started,
      vstMs: this.vstMs,
      playedS,
      stalledS,
      stalls: this.stalls,
      avgBitrate: avg,
      switches: this.switches,
      bytes: this.bytes,
      exitReason: reason,
      failovers: this.failovers,
      errors: this.errors,
      ...(this.refused ? { refused: this.refused } : {}),
      startMs: this.t0,
      endMs: now,
      edges: this.edgeUsage,
      segments: this.records,
      sinkErrors: this.em.sinkErrors,
    };
  }
}

function clampIndex(i: number, n: number): number {
  if (!Number.isFinite(i)) return 0;
  return Math.min(Math.max(0, Math.floor(i)), n - 1);
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

export interface SessionHandle {
  done: Promise<SessionResult>;
  abort(reason?: ExitReason): void;
}

/** Starts a session at the clock's current time. */
export function startSession(env: SessionEnv, cfg: SessionConfig): SessionHandle {
  const s = new Session(env, cfg);
  return { done: s.run(), abort: (reason) => s.abort(reason) };
}

/**
 * The hint in a response's CMSD-Dynamic: the last Item is the server that answered this client
 * (each tier appends its own). A malformed field is no hint: CMSD is advisory.
 */
export function cmsdHintOf(field: string | undefined): CmsdHint | undefined {
  if (field === undefined) return undefined;
  let items: ReturnType<typeof parseCmsdDynamic>;
  try {
    items = parseCmsdDynamic(field);
  } catch {
    return undefined;
  }
  const own = items.at(-1);
  if (own === undefined) return undefined;
  const etp = own.params.etp;
  return { etpBps: typeof etp === 'number' && etp > 0 ? etp * 1000 : undefined, duress: own.params.du === true };
}

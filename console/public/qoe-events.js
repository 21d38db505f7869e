/**
 * QoE events of the console's browser player: the same envelope and types as player-sim's
 * (telemetry/events.ts), device "browser", checked by the aggregator's own validator
 * (telemetry/validate.ts; test/console/qoe-events.test.ts). Pure: times come in as arguments,
 * so a test can drive a whole session; `EventBatcher` sends them to POST /api/events.
 */

export const EVENT_VERSION = 1;
const CACHE = new Set(['HIT', 'MISS', 'STALE', 'COALESCED']);

/** The X-Cache header as the events carry it (UNKNOWN when absent or unreadable, e.g. not CORS-exposed). */
export function cacheStatusOf(header) {
  const v = String(header ?? '')
    .trim()
    .toUpperCase();
  return CACHE.has(v) ? v : 'UNKNOWN';
}

/** A rendition's name: the master's NAME, else "<kbps>k" as the seeded ladders name theirs. */
export function renditionName(level) {
  if (!level) return '';
  if (typeof level.name === 'string' && level.name !== '' && !/^\d+$/.test(level.name)) return level.name;
  return `${Math.round((level.bitrate ?? 0) / 1000)}k`;
}

const nonNeg = (n) => (Number.isFinite(n) && n > 0 ? n : 0);

export class BrowserQoe {
  /**
   * @param {{ title: string, sessionId: string, send: (e: object) => void, region?: string, isp?: string, abr?: string, uuid?: () => string }} o
   */
  constructor(o) {
    this.o = o;
    this.edgeId = '';
    this.seq = 0;
    this.intentAt = undefined;
    this.startPending = false;
    this.started = false;
    this.ended = false;
    this.stallSince = undefined;
    this.stalledMs = 0;
    this.switches = 0;
    this.bytes = 0;
    this.rendition = '';
    this.bitrate = 0;
    // Time-weighted bitrate over playing time (stalls excluded).
    this.weighted = 0;
    this.weightMs = 0;
    this.playingSince = undefined;
  }

  emit(type, fields, at) {
    if (this.startPending && type !== 'session_start') this.flushStart(at);
    const e = {
      v: EVENT_VERSION,
      id: (this.o.uuid ?? (() => crypto.randomUUID()))(),
      type,
      ts: Math.round(at),
      sessionId: this.o.sessionId,
      seq: this.seq++,
      title: this.o.title,
      edgeId: this.edgeId,
      region: this.o.region ?? '',
      isp: this.o.isp ?? '',
      device: 'browser',
      abr: this.o.abr ?? 'hlsjs',
      ...fields,
    };
    this.o.send(e);
    return e;
  }

  /** Play intent: VST counts from here. session_start waits for the first edge (so sessions count per edge), as player-sim's does. */
  intent(at) {
    this.intentAt = at;
    this.startPending = true;
  }

  flushStart() {
    if (!this.startPending) return;
    this.startPending = false;
    this.emit('session_start', {}, this.intentAt);
  }

  /** A media fragment arrived. */
  segment(s, at) {
    if (s.edgeId) {
      this.edgeId = s.edgeId;
      this.flushStart();
    }
    this.bytes += nonNeg(s.bytes);
    const transferMs = Math.max(0, s.downloadMs - s.ttfbMs);
    return this.emit(
      'segment',
      {
        rendition: s.rendition,
        bitrate: nonNeg(s.bitrate),
        index: Math.max(0, Math.floor(s.index)),
        bytes: nonNeg(s.bytes),
        ttfbMs: Math.round(nonNeg(s.ttfbMs)),
        downloadMs: Math.round(nonNeg(s.downloadMs)),
        throughputBps: transferMs > 0 ? Math.round((nonNeg(s.bytes) * 8 * 1000) / transferMs) : 0,
        cacheStatus: cacheStatusOf(s.xCache),
      },
      at,
    );
  }

  accumulate(at) {
    if (this.playingSince !== undefined) {
      const dt = Math.max(0, at - this.playingSince);
      this.weighted += this.bitrate * dt;
      this.weightMs += dt;
      this.playingSince = at;
    }
  }

  /** The first frame is on screen (the video's first `playing`). */
  firstFrame(at, rendition, bitrate) {
    if (this.started) return undefined;
    this.started = true;
    this.rendition = rendition;
    this.bitrate = nonNeg(bitrate);
    this.playingSince = at;
    return this.emit('startup', { vstMs: Math.round(nonNeg(at - (this.intentAt ?? at))), rendition, bitrate: this.bitrate }, at);
  }

  /** The rendition changed (hls.js LEVEL_SWITCHED). */
  switched(at, rendition, bitrate) {
    if (!this.rendition || rendition === this.rendition) {
      this.rendition = rendition;
      this.bitrate = nonNeg(bitrate);
      return undefined;
    }
    this.accumulate(at);
    const from = this.rendition;
    const fromBitrate = this.bitrate;
    this.rendition = rendition;
    this.bitrate = nonNeg(bitrate);
    this.switches++;
    return this.emit('switch', { from, to: rendition, fromBitrate, toBitrate: this.bitrate }, at);
  }

  /** The video waits for data after it started (`waiting`). */
  stallStart(at, bufferS) {
    if (!this.started || this.stallSince !== undefined) return undefined;
    this.accumulate(at);
    this.playingSince = undefined;
    this.stallSince = at;
    return this.emit('stall_start', { bufferS: Number.isFinite(bufferS) ? bufferS : 0 }, at);
  }

  /** It plays again (`playing`). */
  stallEnd(at) {
    if (this.stallSince === undefined) return undefined;
    const stallMs = Math.max(0, at - this.stallSince);
    this.stallSince = undefined;
    this.stalledMs += stallMs;
    this.playingSince = at;
    return this.emit('stall_end', { stallMs: Math.round(stallMs) }, at);
  }

  error(at, code, message, fatal, reason) {
    return this.emit(
      'error',
      {
        code: String(code).slice(0, 512),
        message: String(message),
        fatal: Boolean(fatal),
        ...(reason ? { reason: String(reason).slice(0, 512) } : {}),
      },
      at,
    );
  }

  /** The session is over: `exitReason` one of completed, watch-time, error, start-failure, aborted. */
  end(at, exitReason, playedS) {
    if (this.ended) return undefined;
    this.ended = true;
    if (this.stallSince !== undefined) this.stallEnd(at);
    this.accumulate(at);
    this.flushStart();
    const reason = !this.started && exitReason === 'error' ? 'start-failure' : exitReason;
    return this.emit(
      'session_end',
      {
        playedS: Math.round(nonNeg(playedS) * 1000) / 1000,
        stalledS: Math.round(this.stalledMs) / 1000,
        avgBitrate: this.weightMs > 0 ? Math.round(this.weighted / this.weightMs) : this.bitrate,
        switches: this.switches,
        started: this.started,
        exitReason: reason,
        bytes: this.bytes,
      },
      at,
    );
  }
}

/** Bounds of one POST /v1/events body (common/contracts.ts EVENT_BATCH_LIMITS), kept under by the batcher. */
export const BATCH_LIMITS = { maxEvents: 200, maxBodyBytes: 64 * 1024 };

/** The bodies that carry `events`: `{"events": [...]}` each, within BATCH_LIMITS. */
export function batchBodies(events, maxEvents = 50, maxBytes = BATCH_LIMITS.maxBodyBytes - 1024) {
  const bodies = [];
  let cur = [];
  let size = 12;
  for (const e of events) {
    const len = JSON.stringify(e).length + 1;
    if (cur.length > 0 && (cur.length >= maxEvents || size + len > maxBytes)) {
      bodies.push(JSON.stringify({ events: cur }));
      cur = [];
      size = 12;
    }
    cur.push(e);
    size += len;
  }
  if (cur.length) bodies.push(JSON.stringify({ events: cur }));
  return bodies;
}

/**
 * Queues events and sends them in batches: every `flushMs`, or at once past `maxEvents`; with
 * navigator.sendBeacon when the page goes away (it outlives the page), else fetch keepalive.
 * Bodies go as text/plain, which needs no CORS preflight and which the ingest reads as JSON.
 */
export class EventBatcher {
  constructor(o) {
    this.url = o.url;
    this.maxEvents = o.maxEvents ?? 50;
    this.flushMs = o.flushMs ?? 2_000;
    this.queue = [];
    this.timer = undefined;
    this.sent = 0;
    this.failed = 0;
    this.onResult = o.onResult;
  }

  push(e) {
    this.queue.push(e);
    if (this.queue.length >= this.maxEvents) this.flush();
    else if (this.timer === undefined) this.timer = setTimeout(() => this.flush(), this.flushMs);
  }

  flush(opts = {}) {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    const events = this.queue.splice(0);
    for (const body of batchBodies(events, this.maxEvents)) {
      const n = JSON.parse(body).events.length;
      if (opts.beacon && typeof navigator !== 'undefined' && navigator.sendBeacon?.(this.url, body)) {
        this.sent += n;
        continue;
      }
      fetch(this.url, { method: 'POST', body, keepalive: true, credentials: 'same-origin', headers: { 'content-type': 'text/plain' } }).then(
        (res) => {
          if (res.ok) this.sent += n;
          else this.failed += n;
          this.onResult?.(res.status, n);
        },
        () => {
          this.failed += n;
          this.onResult?.(0, n);
        },
      );
    }
  }
}

/**
 * The console's player: hls.js on steering's Content Steering master
 * (`<steering>/v1/play/{title}/master.m3u8`, one pathway per edge). For each fragment it shows
 * which edge served it (X-Edge-Id), X-Cache and the throughput, and marks pathway changes; it
 * reports QoE like any player (qoe-events.js → POST /api/events). State for tests is
 * `window.ocdnPlayer`. Reading X-Edge-Id and X-Cache across origins needs the edges to expose
 * them (Access-Control-Expose-Headers); without, they show as "?" and UNKNOWN.
 */
import { BrowserQoe, cacheStatusOf, EventBatcher, renditionName } from './qoe-events.js';

const MAX_FRAGMENTS = 500;

/** A response header from hls.js' networkDetails: an XMLHttpRequest (default loader) or a fetch Response. */
function header(details, name) {
  try {
    if (!details) return null;
    if (typeof details.getResponseHeader === 'function') return details.getResponseHeader(name);
    if (details.headers && typeof details.headers.get === 'function') return details.headers.get(name);
  } catch {
    // not exposed by CORS: unreadable
  }
  return null;
}

function freshState() {
  return {
    state: 'idle',
    title: null,
    currentTime: 0,
    fragments: [],
    pathways: [],
    sessionId: null,
    steeringSessionId: null,
    errors: [],
    events: { queued: 0, sent: 0, failed: 0 },
  };
}

export function createPlayer({ video, steeringUrl, eventsUrl = '/api/events', onChange = () => {} }) {
  const Hls = window.Hls;
  let hls;
  let qoe;
  let batcher;
  let t0 = 0;
  let playedS = 0;
  let lastPos = 0;
  let lastPathway = null;
  const s = freshState();
  window.ocdnPlayer = s;

  const now = () => Date.now();
  const changed = () => {
    s.currentTime = video.currentTime;
    if (batcher) s.events = { queued: batcher.queue.length, sent: batcher.sent, failed: batcher.failed };
    onChange(s);
  };
  const level = (i) => hls?.levels?.[i];
  const markPathway = (kind, pathway, extra = {}) => {
    s.pathways.push({ at: now() - t0, t: video.currentTime, kind, pathway, ...extra });
    changed();
  };

  function finish(reason) {
    if (!qoe) return;
    qoe.end(now(), reason, playedS);
    batcher.flush({ beacon: reason === 'aborted' });
    qoe = undefined;
  }

  function stop(reason = 'aborted') {
    finish(reason);
    if (hls) hls.destroy();
    hls = undefined;
    video.removeAttribute('src');
    video.load();
    if (s.state !== 'error' && s.state !== 'ended') s.state = 'stopped';
    changed();
  }

  function play(title) {
    if (hls) stop();
    Object.assign(s, freshState(), { title, state: 'loading', sessionId: crypto.randomUUID() });
    t0 = now();
    playedS = 0;
    lastPos = 0;
    lastPathway = null;
    batcher = new EventBatcher({ url: eventsUrl, onResult: () => changed() });
    qoe = new BrowserQoe({ title, sessionId: s.sessionId, send: (e) => batcher.push(e) });
    qoe.intent(t0);
    if (!Hls?.isSupported()) {
      s.state = 'error';
      s.errors.push({ at: 0, type: 'media', details: 'hls.js is not supported in this browser (no MediaSource)', fatal: true });
      qoe.error(now(), 'unsupported', 'hls.js is not supported here', true);
      finish('error');
      return changed();
    }
    // A short forward buffer (hls.js would otherwise hold up to 60 MB, minutes of a title): the
    // console is for watching the CDN, so fragments keep loading and a chaos kill shows in the
    // fragment table and the pathway timeline within seconds, not after the buffer drains.
    hls = new Hls({ enableWorker: true, lowLatencyMode: false, maxBufferLength: 10, maxMaxBufferLength: 20 });

    hls.on(Hls.Events.MANIFEST_LOADED, (_e, data) => {
      const cs = data.contentSteering;
      if (cs) {
        s.steeringSessionId = /\/v1\/steering\/([^/?#]+)\.json/.exec(cs.uri)?.[1] ?? null;
        markPathway('initial', cs.pathwayId || null, { uri: cs.uri });
      }
    });
    hls.on(Hls.Events.STEERING_MANIFEST_LOADED, (_e, data) => {
      const prio = data.steeringManifest['PATHWAY-PRIORITY'] ?? [];
      markPathway('steering-manifest', prio[0] ?? null, { priority: prio, ttl: data.steeringManifest.TTL });
    });
    hls.on(Hls.Events.LEVEL_SWITCHED, (_e, data) => {
      const l = level(data.level);
      if (!l) return;
      qoe?.switched(now(), renditionName(l), l.bitrate);
      if (l.pathwayId && l.pathwayId !== lastPathway) markPathway('level', l.pathwayId, { rendition: renditionName(l) });
    });
    hls.on(Hls.Events.FRAG_LOADED, (_e, data) => {
      const f = data.frag;
      if (f.type !== 'main' || typeof f.sn !== 'number') return;
      const st = f.stats;
      const l = level(f.level);
      const ttfbMs = Math.max(0, st.loading.first - st.loading.start);
      const ms = Math.max(0, st.loading.end - st.loading.start);
      const edgeId = header(data.networkDetails, 'X-Edge-Id');
      const xCache = header(data.networkDetails, 'X-Cache');
      const pathway = l?.pathwayId ?? null;
      if (pathway !== lastPathway) {
        if (lastPathway !== null) markPathway('fragment', pathway, { from: lastPathway, sn: f.sn });
        lastPathway = pathway;
      }
      s.fragments.push({
        sn: f.sn,
        t: f.start,
        rendition: renditionName(l),
        pathway,
        edgeId: edgeId ?? null,
        xCache: xCache ?? null,
        bytes: st.loaded,
        ms: Math.round(ms),
        ttfbMs: Math.round(ttfbMs),
        bps: ms - ttfbMs > 0 ? Math.round((st.loaded * 8 * 1000) / (ms - ttfbMs)) : 0,
      });
      if (s.fragments.length > MAX_FRAGMENTS) s.fragments.shift();
      qoe?.segment(
        {
          rendition: renditionName(l),
          bitrate: l?.bitrate ?? 0,
          index: f.sn,
          bytes: st.loaded,
          ttfbMs,
          downloadMs: ms,
          edgeId: edgeId ?? '',
          xCache: cacheStatusOf(xCache),
        },
        now(),
      );
      changed();
    });
    hls.on(Hls.Events.ERROR, (_e, data) => {
      const status = data.response?.code;
      s.errors.push({ at: now() - t0, type: data.type, details: data.details, fatal: data.fatal, ...(status ? { status } : {}) });
      qoe?.error(now(), data.details, `${data.type}: ${data.details}${status ? ` (HTTP ${status})` : ''}`, data.fatal, data.reason);
      if (data.fatal) {
        s.state = 'error';
        finish('error');
        hls?.destroy();
        hls = undefined;
      }
      changed();
    });

    hls.loadSource(`${steeringUrl}/v1/play/${encodeURIComponent(title)}/master.m3u8`);
    hls.attachMedia(video);
    video.play().catch(() => undefined);
    changed();
  }

  video.addEventListener('playing', () => {
    if (!qoe) return;
    const l = level(hls?.currentLevel ?? -1);
    if (s.state === 'loading') qoe.firstFrame(now(), renditionName(l), l?.bitrate ?? 0);
    else qoe.stallEnd(now());
    s.state = 'playing';
    changed();
  });
  video.addEventListener('waiting', () => {
    if (!qoe || s.state !== 'playing') return;
    const b = video.buffered;
    const ahead = b.length ? Math.max(0, b.end(b.length - 1) - video.currentTime) : 0;
    qoe.stallStart(now(), ahead);
    s.state = 'stalled';
    changed();
  });
  video.addEventListener('timeupdate', () => {
    const pos = video.currentTime;
    // Played time is what the playhead moved forward in small steps (a seek is not watching).
    if (pos > lastPos && pos - lastPos < 2) playedS += pos - lastPos;
    lastPos = pos;
    s.currentTime = pos;
  });
  video.addEventListener('ended', () => {
    s.state = 'ended';
    finish('completed');
    changed();
  });
  // The page going away ends the session; sendBeacon outlives the page.
  window.addEventListener('pagehide', () => finish('aborted'));

  return { play, stop, state: s };
}

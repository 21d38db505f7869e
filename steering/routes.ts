import { serveCatalog } from './catalog-route.ts';
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import { type EdgeList, HEARTBEAT_LIMITS, type HeartbeatAck, MAX_HOLDS_QUERY } from '../common/contracts.ts';
import { describeError, ErrorCodes, isOcdnError, OcdnError } from '../common/errors.ts';
import type { HeartbeatVerifier } from '../common/edge-key.ts';
import { parseJsonBody, readRawBody, sendError, sendJson, sendMethodNotAllowed } from '../common/http.ts';
import type { Logger } from '../common/log.ts';
import { sendMetrics } from '../common/metrics.ts';
import { signPrefix, TOKEN_SESSION, tokenPath } from '../common/token.ts';
import type { TitleCatalog } from './catalog.ts';
import {
  buildSessionMaster,
  hlsPathwayParam,
  hlsThroughputParam,
  manifestTtl,
  type MasterSource,
  newSessionId,
  pathwayClone,
  pathwayPriority,
  SESSION_ID_PATTERN,
  type SessionStore,
  type SteeringManifest,
} from './content-steering.ts';
import { type DecisionLog, decisionRecord } from './decision-log.ts';
import type { SteeringMetrics } from './metrics.ts';
import { type EdgeView, getPolicy, isPolicyName, POLICY_NAMES, type PolicyName, type RankedEdge } from './policies.ts';
import { type EdgeRegistry, validateHeartbeat } from './registry.ts';
import type { Topology } from './topology.ts';

/** What the handlers need of steering: its settings and the state startSteering built. */
export interface SteeringContext {
  log: Logger;
  /** One line per decision, when asked for (--log-decisions or debug level). */
  logDecision: ((o: object, msg: string) => void) | undefined;
  /** Every decision to Kafka for the miss classification, when brokers were given. */
  decisions?: DecisionLog | undefined;
  topology: Topology;
  defaultPolicy: PolicyName;
  epsilon: number;
  tokenTtlSec: number;
  maxEdges: number;
  manifestTtlSec: number;
  /** The manifest TTL while the registry is settling (content-steering.ts manifestTtl). */
  manifestShortTtlSec: number;
  /** HMAC secret shared with the edges; `null` hands out unsigned URLs. */
  secret: string | null;
  /** Base URL players reach steering at (configured, else the URL it listens on), no trailing slash. */
  publicUrl: () => string;
  registry: EdgeRegistry;
  /** Checks heartbeat signatures; null = edge admission off (--no-edge-auth). */
  admission: HeartbeatVerifier | null;
  catalog: TitleCatalog;
  masters: MasterSource;
  sessions: SessionStore;
  metrics: SteeringMetrics;
}

/** A route's handler: synchronous where it can be (the hot path makes no promise per decision). */
export type Handler = (req: IncomingMessage, res: ServerResponse, q: URLSearchParams, match: string) => void | Promise<void>;
/** Handlers of one path by method; HEAD is served by GET. */
export type Route = { GET?: Handler; POST?: Handler };

const TITLE_PATTERN = /^[A-Za-z0-9._-]{1,128}$/;
const LABEL_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;
const NOT_FOUND_HINT = 'try /v1/steer, /v1/edges, /v1/play/{title}/master.m3u8, /healthz, /metrics';

const bad = (msg: string) => new OcdnError(ErrorCodes.BAD_REQUEST, msg);

function sameSchemeAndPort(a: string, b: string): boolean {
  const x = new URL(a);
  const y = new URL(b);
  return x.protocol === y.protocol && x.port === y.port;
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw bad(`malformed percent-encoding in "${s.slice(0, 80)}"`);
  }
}

interface Decision {
  title: string;
  site: string;
  policy: PolicyName;
  ranked: RankedEdge[];
  /** Ranked edges cut from the answer by maxEdges (only kept when decisions are published). */
  cut?: RankedEdge[];
}

/** Steering's request listener: its routes and the decisions behind them. */
export function steeringRoutes(ctx: SteeringContext): RequestListener {
  const {
    log,
    logDecision,
    topology,
    defaultPolicy,
    epsilon,
    tokenTtlSec,
    maxEdges,
    manifestTtlSec,
    manifestShortTtlSec,
    secret,
    registry,
    admission,
    catalog,
    masters,
    sessions,
    metrics,
    decisions,
  } = ctx;
  const debug = log.isLevelEnabled('debug');

  // ---- state -----------------------------------------------------------------------------
  let seq = 0;
  // JSON.stringify of an answer (five ~200-byte URLs) was the largest cost of a decision. The
  // answer is put together from pieces instead: per-edge fragments made once per edge URL with
  // JSON.stringify, and values that are JSON-safe by construction (titles, regions, policies,
  // session ids and tokens match [A-Za-z0-9._-]; reasons are policy constants).
  const fragments = new WeakMap<EdgeView, { url: string; region: string; head: string; mid: string }>();

  // ---- decisions -------------------------------------------------------------------------
  /**
   * The title's token for a session: it names the session (common/token.ts), so the edges' access
   * records carry it whatever the player sends as CMCD. A session id a token cannot carry (a
   * client's own `?session=` with dots) gets the session-less token.
   */
  function tokenFor(title: string, expiresSec: number, session: string): string | undefined {
    if (secret === null) return undefined;
    return signPrefix(secret, `/vod/${title}/`, expiresSec, TOKEN_SESSION.test(session) ? session : undefined);
  }

  function decide(q: URLSearchParams, req: IncomingMessage, titleArg?: string): Decision {
    const title = titleArg ?? q.get('title') ?? '';
    if (!TITLE_PATTERN.test(title))
      throw bad(title === '' ? 'missing ?title=' : `bad title "${title.slice(0, 80)}": use 1-128 characters of A-Z a-z 0-9 . _ -`);
    const region = q.get('region') ?? undefined;
    if (region !== undefined && region !== '' && !LABEL_PATTERN.test(region))
      throw bad(`bad region "${region.slice(0, 80)}": use 1-64 characters of A-Z a-z 0-9 . _ -`);
    const policyArg = q.get('policy');
    let policy = defaultPolicy;
    if (policyArg !== null && policyArg !== '') {
      if (!isPolicyName(policyArg)) throw bad(`unknown policy "${policyArg.slice(0, 40)}" (use ${POLICY_NAMES.join(', ')})`);
      policy = policyArg;
    }
    try {
      catalog.require(title);
    } catch (err) {
      metrics.countDecision(policy, isOcdnError(err, ErrorCodes.NOT_FOUND) ? 'unknown-title' : 'no-catalog');
      throw err;
    }
    const site = topology.clientSite(region, req.socket.remoteAddress);
    const edges = registry.healthy();
    if (edges.length === 0) {
      metrics.countDecision(policy, 'no-edge');
      const c = registry.counts();
      throw new OcdnError(ErrorCodes.NO_EDGE, `no healthy edge (${c.up + c.down} registered, ${c.down} out)`);
    }
    const ranked = getPolicy(policy).rank({
      title,
      edges,
      siteOrder: topology.siteOrder(site),
      epsilon,
      loadQuantum: registry.sessionLoad,
      random: Math.random,
      seq: seq++,
    });
    const cut = decisions !== undefined && ranked.length > maxEdges ? ranked.slice(maxEdges) : undefined;
    if (ranked.length > maxEdges) ranked.length = maxEdges;
    metrics.countDecision(policy, ranked[0]!.reason);
    return cut ? { title, site, policy, ranked, cut } : { title, site, policy, ranked };
  }

  function publishDecision(sessionId: string, d: Pick<Decision, 'title' | 'site' | 'ranked' | 'cut'>): void {
    decisions?.publish(decisionRecord({ sessionId, ...d, unhealthy: registry.unhealthy(), ts: Date.now() }));
  }

  function fragmentOf(e: EdgeView) {
    let f = fragments.get(e);
    if (f === undefined || f.url !== e.url || f.region !== e.region) {
      const url = JSON.stringify(e.url);
      f = {
        url: e.url,
        region: e.region,
        head: `{"id":${JSON.stringify(e.id)},"url":${url.slice(0, -1)}`,
        mid: `","region":${JSON.stringify(e.region)},"reason":"`,
      };
      fragments.set(e, f);
    }
    return f;
  }

  /** Where players reach steering: configuration only, never the request (its Host is the client's to write). */
  function baseUrl(): string {
    return ctx.publicUrl();
  }

  // ---- handlers --------------------------------------------------------------------------
  /** GET /v1/steer → SteerResponse (common/contracts.ts), assembled by hand (see fragments). */
  function steer(req: IncomingMessage, res: ServerResponse, q: URLSearchParams): void | Promise<void> {
    const pending = catalog.whenKnown(q.get('title') ?? '');
    if (pending) return pending.then(() => steerNow(req, res, q));
    steerNow(req, res, q);
  }

  function steerNow(req: IncomingMessage, res: ServerResponse, q: URLSearchParams): void {
    const t0 = performance.now();
    const d = decide(q, req);
    const session = q.get('session');
    const sessionId = session !== null && LABEL_PATTERN.test(session) ? session : randomUUID();
    const expiresSec = Math.floor(Date.now() / 1000) + tokenTtlSec;
    const token = tokenFor(d.title, expiresSec, sessionId);
    // The same path on every edge: the token in it (common/token.ts tokenPath) so relative URIs keep it.
    const tail = tokenPath(`/vod/${d.title}/master.m3u8`, token);
    let body = `{"sessionId":"${sessionId}","title":"${d.title}","policy":"${d.policy}","site":"${d.site}","expiresAt":${expiresSec * 1000},"edges":[`;
    for (let i = 0; i < d.ranked.length; i++) {
      const r = d.ranked[i]!;
      const f = fragmentOf(r.edge);
      body += `${i === 0 ? '' : ','}${f.head}${tail}${f.mid}${r.reason}","score":${Number.isFinite(r.score) ? r.score : 0}}`;
    }
    body += ']}';
    registry.noteSteered(d.ranked[0]!.edge.id);
    res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
    res.end(body);
    metrics.steerTimer.observe((performance.now() - t0) / 1000);
    logDecision?.(
      { sessionId, title: d.title, site: d.site, policy: d.policy, isp: q.get('isp') ?? undefined, edges: d.ranked.map((r) => `${r.edge.id}:${r.reason}`) },
      'steer',
    );
    publishDecision(sessionId, d);
  }

  /** GET /v1/play/{title}/master.m3u8: a session master with one pathway per edge. */
  async function playMaster(req: IncomingMessage, res: ServerResponse, q: URLSearchParams, rawTitle: string): Promise<void> {
    const title = safeDecode(rawTitle);
    await catalog.whenKnown(title);
    const d = decide(q, req, title);
    const master = await masters.get(catalog.require(d.title));
    const expiresSec = Math.floor(Date.now() / 1000) + tokenTtlSec;
    const id = newSessionId();
    const serverUri = `${baseUrl()}/v1/steering/${id}.json`;
    const text = buildSessionMaster({
      master,
      title: d.title,
      pathways: d.ranked.map((r) => ({ id: r.edge.id, url: r.edge.url })),
      token: tokenFor(d.title, expiresSec, id),
      serverUri,
    });
    sessions.add({
      id,
      title: d.title,
      site: d.site,
      policy: d.policy,
      pathways: d.ranked.map((r) => r.edge.id),
      lowestBandwidth: Math.min(...master.variants.map((v) => v.bandwidth)),
      createdAt: Date.now(),
      expiresAtSec: expiresSec,
      reloads: 0,
    });
    registry.noteSteered(d.ranked[0]!.edge.id);
    res.writeHead(200, { 'content-type': 'application/vnd.apple.mpegurl', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
    res.end(text);
    logDecision?.({ sessionId: id, title: d.title, site: d.site, policy: d.policy, pathways: d.ranked.map((r) => `${r.edge.id}:${r.reason}`) }, 'play master');
    publishDecision(id, d);
  }

  /**
   * GET /v1/steering/{sessionId}.json: the HLS Content Steering manifest, re-ranked now, with a
   * PATHWAY-CLONES entry for every edge that came up after the session began (so players can
   * use edges added since their master was made) and a TTL that follows the registry's
   * stability (content-steering.ts manifestTtl). The session is in the path of RELOAD-URI, so
   * the query players add (`_HLS_pathway`, `_HLS_throughput`) never clashes with it.
   */
  async function steeringManifest(_req: IncomingMessage, res: ServerResponse, q: URLSearchParams, id: string): Promise<void> {
    if (!SESSION_ID_PATTERN.test(id)) throw new OcdnError(ErrorCodes.NOT_FOUND, `not a steering session id: "${id.slice(0, 64)}"`);
    const s = sessions.get(id);
    // 410, not 404: the spec's (and hls.js's) signal to stop reloading this manifest for good.
    if (!s || s.expiresAtSec * 1000 <= Date.now())
      throw new OcdnError(ErrorCodes.GONE, `steering session "${id}" has ended or expired (start a new one with GET /v1/play/{title}/master.m3u8)`);
    const current = hlsPathwayParam(q.get('_HLS_pathway'));
    const throughput = hlsThroughputParam(q.get('_HLS_throughput'));
    s.reloads++;
    if (current !== undefined) s.lastPathway = current;
    if (throughput !== undefined) s.lastThroughputBps = throughput;
    const edges = registry.healthy();
    const ranked =
      edges.length === 0
        ? []
        : getPolicy(s.policy as PolicyName).rank({
            title: s.title,
            edges,
            siteOrder: topology.siteOrder(s.site),
            epsilon,
            loadQuantum: registry.sessionLoad,
            random: Math.random,
            seq: seq++,
          });
    const known = new Set(s.pathways);
    const late = ranked.filter((r) => !known.has(r.edge.id) && (registry.upSince(r.edge.id) ?? 0) > s.createdAt).slice(0, maxEdges);
    const { priority, note } = pathwayPriority({
      ranked,
      sessionPathways: late.length === 0 ? s.pathways : [...s.pathways, ...late.map((r) => r.edge.id)],
      current,
      throughputBps: throughput,
      lowestBandwidth: s.lowestBandwidth,
    });
    if (priority.length === 0) {
      metrics.countDecision(s.policy, 'no-edge');
      throw new OcdnError(ErrorCodes.NO_EDGE, `no pathway of session ${id} is healthy (${s.pathways.join(', ')})`);
    }
    metrics.countDecision(s.policy, `manifest+${note}`);
    const manifest: SteeringManifest = {
      VERSION: 1,
      TTL: manifestTtl({
        nowMs: Date.now(),
        lastChangeAtMs: registry.lastChangeAt,
        currentOut: current !== undefined && !priority.includes(current),
        stableSec: manifestTtlSec,
        shortSec: manifestShortTtlSec,
      }),
      'RELOAD-URI': `${baseUrl()}/v1/steering/${id}.json`,
      'PATHWAY-PRIORITY': priority,
    };
    if (late.length > 0) {
      const master = await masters.get(catalog.require(s.title));
      const token = tokenFor(s.title, s.expiresAtSec, s.id);
      // A base on the new edge's scheme and port when the session has one: then HOST alone (all
      // that a client without PER-VARIANT-URIS applies) lands on the new edge too.
      const sessionEdges = ranked.filter((r) => known.has(r.edge.id)).map((r) => r.edge);
      const baseFor = (url: string) => sessionEdges.find((e) => sameSchemeAndPort(e.url, url))?.id ?? s.pathways[0]!;
      manifest['PATHWAY-CLONES'] = late.map((r) =>
        pathwayClone({ master, title: s.title, baseId: baseFor(r.edge.url), edge: { id: r.edge.id, url: r.edge.url }, token }),
      );
    }
    sendJson(res, 200, manifest);
    logDecision?.({ sessionId: id, title: s.title, current, throughput, note, priority, clones: late.map((r) => r.edge.id) }, 'steering manifest');
    if (decisions !== undefined) {
      // The order the player follows is the manifest's, not the policy's.
      const byId = new Map(ranked.map((r) => [r.edge.id, r]));
      const inOrder = priority.flatMap((p) => byId.get(p) ?? []);
      publishDecision(id, { title: s.title, site: s.site, ranked: inOrder });
    }
  }

  /**
   * POST /v1/edges/heartbeat: a signed EdgeHeartbeat in, HeartbeatAck out. Nothing of a beat is
   * believed before its signature verifies over the raw bytes: an unsigned, forged or replayed
   * one is refused with 401 and never reaches the registry (so is never probed, listed or
   * steered to). Each refusal is counted by reason.
   */
  async function heartbeat(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const refused = (reason: string, err: OcdnError): never => {
      metrics.heartbeatRefused(reason);
      throw err;
    };
    const signed = admission?.headers(req.headers);
    if (signed !== undefined && !signed.ok) refused(signed.reason, new OcdnError(ErrorCodes.UNAUTHORIZED, signed.message));
    let raw: Buffer;
    try {
      raw = await readRawBody(req, HEARTBEAT_LIMITS.maxBodyBytes);
    } catch (err) {
      throw isOcdnError(err, ErrorCodes.PAYLOAD_TOO_LARGE) ? refused('too-large', err) : err;
    }
    let admittedId: string | undefined;
    if (admission && signed?.ok) {
      const a = admission.verify(signed, raw);
      if (!a.ok) refused(a.reason, new OcdnError(a.reason === 'replay-memory-full' ? ErrorCodes.TOO_MANY : ErrorCodes.UNAUTHORIZED, a.message));
      else admittedId = a.id;
    }
    let hb: ReturnType<typeof validateHeartbeat>;
    try {
      hb = validateHeartbeat(parseJsonBody(raw));
    } catch (err) {
      metrics.heartbeatInvalid.inc();
      throw isOcdnError(err) ? refused('invalid', err) : err;
    }
    if (admittedId !== undefined && hb.id !== admittedId)
      refused('id-mismatch', new OcdnError(ErrorCodes.UNAUTHORIZED, `heartbeat body says edge "${hb.id}" but is signed as "${admittedId}"`));
    let state: ReturnType<EdgeRegistry['heartbeat']>;
    try {
      state = registry.heartbeat(hb);
    } catch (err) {
      throw isOcdnError(err, ErrorCodes.TOO_MANY) ? refused('registry-full', err) : err;
    }
    metrics.heartbeatOk.inc();
    const ack: HeartbeatAck = { ok: true, id: hb.id, state };
    sendJson(res, 200, ack);
  }

  function edgeList(_req: IncomingMessage, res: ServerResponse, q: URLSearchParams): void {
    const raw = q.get('holds');
    const holds = raw === null ? undefined : raw.split(',').filter(Boolean);
    if (holds && holds.length > MAX_HOLDS_QUERY)
      throw new OcdnError(ErrorCodes.BAD_REQUEST, `?holds= takes at most ${MAX_HOLDS_QUERY} titles (got ${holds.length}): ask in chunks`);
    const body: EdgeList = { edges: registry.list(holds) };
    sendJson(res, 200, body);
  }

  function healthz(_req: IncomingMessage, res: ServerResponse): void {
    const c = registry.counts();
    sendJson(res, 200, {
      ok: true,
      edgesUp: c.up,
      edgesDown: c.down,
      catalog: catalog.loaded ? catalog.size : (catalog.error ?? 'not loaded'),
      policy: defaultPolicy,
    });
  }

  function readyz(_req: IncomingMessage, res: ServerResponse): void {
    const up = registry.counts().up;
    const ready = catalog.loaded && up > 0;
    sendJson(res, ready ? 200 : 503, { ready, catalog: catalog.loaded, edgesUp: up });
  }

  // ---- routing ---------------------------------------------------------------------------
  /** Exact paths; add a route with one line here. */
  const routes = new Map<string, Route>([
    ['/v1/steer', { GET: steer }],
    ['/v1/edges/heartbeat', { POST: heartbeat }],
    ['/v1/edges', { GET: edgeList }],
    ['/v1/catalog', { GET: (req, res) => serveCatalog(req, res, catalog) }],
    ['/v1/topology', { GET: (_req, res) => sendJson(res, 200, topology.toJSON()) }],
    ['/healthz', { GET: healthz }],
    ['/readyz', { GET: readyz }],
    ['/metrics', { GET: (_req, res) => sendMetrics(res, metrics.registry) }],
  ]);
  /** Paths with a parameter: the first capture group is passed to the handler as `match`. */
  const patterns: [RegExp, Route][] = [
    [/^\/v1\/play\/([^/]+)\/master\.m3u8$/, { GET: playMaster }],
    [/^\/v1\/steering\/([^/]+)\.json$/, { GET: steeringManifest }],
  ];

  function fail(req: IncomingMessage, res: ServerResponse, err: unknown): void {
    const status = sendError(res, err);
    // A broken upstream (502, 504) or no edge (503) is the world's state, not a steering fault.
    if (status === 502 || status === 504) log.warn({ err: describeError(err), url: req.url?.slice(0, 200) }, 'upstream failed');
    else if (status >= 500 && status !== 503) log.error({ err: describeError(err), url: req.url?.slice(0, 200) }, 'request failed');
    else if (debug) log.debug({ err: describeError(err), url: req.url?.slice(0, 200), status }, 'request refused');
  }

  return (req, res) => {
    const raw = req.url ?? '/';
    const qi = raw.indexOf('?');
    const path = qi === -1 ? raw : raw.slice(0, qi);
    let route = routes.get(path);
    let match = '';
    if (route === undefined) {
      for (const [re, r] of patterns) {
        const m = re.exec(path);
        if (m) {
          route = r;
          match = m[1]!;
          break;
        }
      }
    }
    if (route === undefined) return fail(req, res, new OcdnError(ErrorCodes.NOT_FOUND, `not found: ${path.slice(0, 200)} (${NOT_FOUND_HINT})`));
    const method = req.method === 'HEAD' ? 'GET' : req.method;
    const handler = method === 'GET' ? route.GET : method === 'POST' ? route.POST : undefined;
    if (handler === undefined) return void sendMethodNotAllowed(res, req.method, route.GET ? 'GET, HEAD' : 'POST');
    const q = new URLSearchParams(qi === -1 ? '' : raw.slice(qi + 1));
    try {
      const done = handler(req, res, q, match);
      if (done !== undefined) done.catch((err: unknown) => fail(req, res, err));
    } catch (err) {
      fail(req, res, err);
    }
  };
}

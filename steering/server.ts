import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Catalog } from '../common/contracts.ts';
import { describeError, ErrorCodes, isOcdnError, OcdnError } from '../common/errors.ts';
import { closeServer, listen, readJsonBody, sendJson, sendText } from '../common/http.ts';
import { createLogger, type Logger } from '../common/log.ts';
import { createRegistry, sendMetrics } from '../common/metrics.ts';
import { signPrefix } from '../common/token.ts';
import type { OriginReader } from '../origin/reader.ts';
import { TitleCatalog } from './catalog.ts';
import { serveCatalog } from './catalog-route.ts';
import {
  buildSessionMaster,
  hlsPathwayParam,
  hlsThroughputParam,
  MasterSource,
  newSessionId,
  pathwayPriority,
  SESSION_ID_PATTERN,
  SessionStore,
  type SteeringManifest,
} from './content-steering.ts';
import { DEFAULT_EPSILON, DEFAULT_POLICY, getPolicy, isPolicyName, POLICY_NAMES, type EdgeView, type PolicyName, type RankedEdge } from './policies.ts';
import { EdgeRegistry, validateHeartbeat, type RegistryOptions } from './registry.ts';
import { DEFAULT_TOPOLOGY, Topology } from './topology.ts';

export interface SteeringOptions {
  /** 0 (default) = any free port. */
  port?: number;
  host?: string;
  /** Base URL players reach steering at (SERVER-URI, RELOAD-URI); default from the request's Host. */
  publicUrl?: string;
  policy?: PolicyName;
  topology?: Topology;
  /** HMAC secret shared with the edges; `null` hands out unsigned URLs (edges with tokens off). */
  tokenSecret: string | null;
  tokenTtlSec?: number;
  epsilon?: number;
  /** Edges per answer (and pathways per session master). */
  maxEdges?: number;
  /** catalog.json and master playlists come from here… */
  origin?: OriginReader;
  /** …or from a fixed catalog (benchmarks); masters are then made from its renditions. */
  catalog?: Catalog;
  catalogRefreshMs?: number;
  /** TTL of the Content Steering manifest, seconds. */
  manifestTtlSec?: number;
  registry?: RegistryOptions;
  log?: Logger;
  /** One info line per decision (steer, play master, manifest); otherwise at debug level only. */
  logDecisions?: boolean;
  defaultMetrics?: boolean;
}

export interface Steering {
  url: string;
  port: number;
  registry: EdgeRegistry;
  catalog: TitleCatalog;
  metrics: Registry;
  server: Server;
  close(): Promise<void>;
}

const TITLE_PATTERN = /^[A-Za-z0-9._-]{1,128}$/;
const LABEL_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;
const HOST_PATTERN = /^(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?$/;

const STATUS: Partial<Record<string, number>> = {
  [ErrorCodes.BAD_REQUEST]: 400,
  [ErrorCodes.NOT_FOUND]: 404,
  [ErrorCodes.NO_EDGE]: 503,
  [ErrorCodes.ORIGIN_UNAVAILABLE]: 503,
  [ErrorCodes.S3_UNREACHABLE]: 503,
  [ErrorCodes.ORIGIN_TIMEOUT]: 504,
  [ErrorCodes.BAD_PLAYLIST]: 502,
};

const bad = (msg: string) => new OcdnError(ErrorCodes.BAD_REQUEST, msg);

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
}

export async function startSteering(opts: SteeringOptions): Promise<Steering> {
  const log = opts.log ?? createLogger('steering');
  const debug = log.isLevelEnabled('debug');
  // Decisions are always counted; a line each is opt-in, at 10k decisions/s it would cost more than deciding.
  const logDecision = opts.logDecisions ? (o: object, msg: string) => log.info(o, msg) : debug ? (o: object, msg: string) => log.debug(o, msg) : undefined;
  const topology = opts.topology ?? new Topology(DEFAULT_TOPOLOGY);
  const defaultPolicy = opts.policy ?? DEFAULT_POLICY;
  const epsilon = opts.epsilon ?? DEFAULT_EPSILON;
  const tokenTtlSec = opts.tokenTtlSec ?? 3_600;
  const maxEdges = opts.maxEdges ?? 5;
  const manifestTtlSec = opts.manifestTtlSec ?? 30;
  const secret = opts.tokenSecret;
  if (!isPolicyName(defaultPolicy)) throw new OcdnError(ErrorCodes.CONFIG, `unknown policy "${String(defaultPolicy)}" (use ${POLICY_NAMES.join(', ')})`);
  if (!(epsilon >= 0)) throw new OcdnError(ErrorCodes.CONFIG, `epsilon must be ≥ 0 (got ${epsilon})`);
  if (!(tokenTtlSec >= 1)) throw new OcdnError(ErrorCodes.CONFIG, `token TTL must be at least 1 s (got ${tokenTtlSec})`);
  if (!(maxEdges >= 1)) throw new OcdnError(ErrorCodes.CONFIG, `maxEdges must be at least 1 (got ${maxEdges})`);

  const registry = new EdgeRegistry({ log, ...opts.registry });
  const catalog = new TitleCatalog({ reader: opts.origin, static: opts.catalog, refreshMs: opts.catalogRefreshMs, log });
  const masters = new MasterSource(opts.origin);
  const sessions = new SessionStore({ ttlMs: tokenTtlSec * 1000 });

  // ---- metrics -------------------------------------------------------------------------
  const metrics = createRegistry({ defaultMetrics: opts.defaultMetrics });
  const decisions = new Counter({
    name: 'ocdn_steering_decisions_total',
    help: 'Steering decisions by policy and the reason of the first edge (or the refusal)',
    labelNames: ['policy', 'reason'],
    registers: [metrics],
  });
  const decisionSeconds = new Histogram({
    name: 'ocdn_steering_decision_seconds',
    help: 'Time to rank and sign one answer',
    labelNames: ['endpoint'],
    buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05],
    registers: [metrics],
  });
  const heartbeats = new Counter({ name: 'ocdn_steering_heartbeats_total', help: 'Edge heartbeats received', labelNames: ['result'], registers: [metrics] });
  const transitions = new Counter({ name: 'ocdn_steering_edge_transitions_total', help: 'Edges going in or out', labelNames: ['state'], registers: [metrics] });
  new Gauge({
    name: 'ocdn_steering_edges',
    help: 'Registered edges by state',
    labelNames: ['state'],
    registers: [metrics],
    collect() {
      const c = registry.counts();
      this.set({ state: 'up' }, c.up);
      this.set({ state: 'down' }, c.down);
    },
  });
  new Gauge({
    name: 'ocdn_steering_catalog_titles',
    help: 'Titles in the loaded catalog',
    registers: [metrics],
    collect() {
      this.set(catalog.size);
    },
  });
  new Gauge({
    name: 'ocdn_steering_play_sessions',
    help: 'Live Content Steering sessions',
    registers: [metrics],
    collect() {
      this.set(sessions.size);
    },
  });
  const heartbeatOk = heartbeats.labels('ok');
  const heartbeatInvalid = heartbeats.labels('invalid');
  const steerTimer = decisionSeconds.labels('steer');
  registry.onChange = (_id, state) => transitions.labels(state).inc();
  // labels() hashes its arguments on every call; the hot path keeps the children instead.
  const decisionChildren = new Map<string, { inc(): void }>();
  const countDecision = (policy: string, reason: string) => {
    const key = `${policy}\u0000${reason}`;
    let child = decisionChildren.get(key);
    if (!child) {
      child = decisions.labels(policy, reason);
      decisionChildren.set(key, child);
    }
    child.inc();
  };

  // ---- tokens --------------------------------------------------------------------------
  // One token covers a title for everyone whose session expires in the same second, so a
  // second's worth of answers for a title share one HMAC.
  let tokenSecond = 0;
  let tokens = new Map<string, string>();
  const tokenFor = (title: string, expiresSec: number): string | undefined => {
    if (secret === null) return undefined;
    if (expiresSec !== tokenSecond) {
      tokenSecond = expiresSec;
      tokens = new Map();
    }
    let t = tokens.get(title);
    if (t === undefined) {
      t = signPrefix(secret, `/vod/${title}/`, expiresSec);
      tokens.set(title, t);
    }
    return t;
  };

  // ---- decisions ------------------------------------------------------------------------
  let seq = 0;
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
      countDecision(policy, isOcdnError(err, ErrorCodes.NOT_FOUND) ? 'unknown-title' : 'no-catalog');
      catalog.refreshSoon();
      throw err;
    }
    const site = topology.clientSite(region, req.socket.remoteAddress);
    const edges = registry.healthy();
    if (edges.length === 0) {
      countDecision(policy, 'no-edge');
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
    if (ranked.length > maxEdges) ranked.length = maxEdges;
    countDecision(policy, ranked[0]!.reason);
    return { title, site, policy, ranked };
  }

  // JSON.stringify of an answer (five ~200-byte URLs) was the largest cost of a decision. The
  // answer is put together from pieces instead: per-edge fragments made once per edge URL with
  // JSON.stringify, and values that are JSON-safe by construction (titles, regions, policies,
  // session ids and tokens match [A-Za-z0-9._-]; reasons are policy constants).
  const fragments = new WeakMap<EdgeView, { url: string; region: string; head: string; mid: string }>();
  const fragmentOf = (e: EdgeView) => {
    let f = fragments.get(e);
    if (f === undefined || f.url !== e.url || f.region !== e.region) {
      const url = JSON.stringify(`${e.url}/vod/`);
      f = {
        url: e.url,
        region: e.region,
        head: `{"id":${JSON.stringify(e.id)},"url":${url.slice(0, -1)}`,
        mid: `","region":${JSON.stringify(e.region)},"reason":"`,
      };
      fragments.set(e, f);
    }
    return f;
  };

  function steer(req: IncomingMessage, res: ServerResponse, q: URLSearchParams): void {
    const t0 = performance.now();
    const d = decide(q, req);
    const session = q.get('session');
    const sessionId = session !== null && LABEL_PATTERN.test(session) ? session : randomUUID();
    const expiresSec = Math.floor(Date.now() / 1000) + tokenTtlSec;
    const token = tokenFor(d.title, expiresSec);
    const tail = token === undefined ? `/master.m3u8` : `/master.m3u8?token=${token}`;
    let body = `{"sessionId":"${sessionId}","title":"${d.title}","policy":"${d.policy}","site":"${d.site}","expiresAt":${expiresSec * 1000},"edges":[`;
    for (let i = 0; i < d.ranked.length; i++) {
      const r = d.ranked[i]!;
      const f = fragmentOf(r.edge);
      body += `${i === 0 ? '' : ','}${f.head}${d.title}${tail}${f.mid}${r.reason}","score":${Number.isFinite(r.score) ? r.score : 0}}`;
    }
    body += ']}';
    registry.noteSteered(d.ranked[0]!.edge.id);
    res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
    res.end(body);
    steerTimer.observe((performance.now() - t0) / 1000);
    logDecision?.(
      { sessionId, title: d.title, site: d.site, policy: d.policy, isp: q.get('isp') ?? undefined, edges: d.ranked.map((r) => `${r.edge.id}:${r.reason}`) },
      'steer',
    );
  }

  // ---- content steering ------------------------------------------------------------------
  function baseUrl(req: IncomingMessage): string {
    if (opts.publicUrl) return opts.publicUrl.replace(/\/+$/, '');
    const host = req.headers.host;
    return host !== undefined && HOST_PATTERN.test(host) ? `http://${host}` : url;
  }

  async function playMaster(req: IncomingMessage, res: ServerResponse, title: string, q: URLSearchParams): Promise<void> {
    const d = decide(q, req, title);
    const master = await masters.get(catalog.require(d.title));
    const expiresSec = Math.floor(Date.now() / 1000) + tokenTtlSec;
    const id = newSessionId();
    const serverUri = `${baseUrl(req)}/v1/steering/${id}.json`;
    const text = buildSessionMaster({
      master,
      title: d.title,
      pathways: d.ranked.map((r) => ({ id: r.edge.id, url: r.edge.url })),
      token: tokenFor(d.title, expiresSec),
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
  }

  function steeringManifest(req: IncomingMessage, res: ServerResponse, id: string, q: URLSearchParams): void {
    const s = SESSION_ID_PATTERN.test(id) ? sessions.get(id) : undefined;
    if (!s)
      throw new OcdnError(ErrorCodes.NOT_FOUND, `unknown or expired steering session "${id.slice(0, 64)}" (start one with GET /v1/play/{title}/master.m3u8)`);
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
    const { priority, note } = pathwayPriority({ ranked, sessionPathways: s.pathways, current, throughputBps: throughput, lowestBandwidth: s.lowestBandwidth });
    if (priority.length === 0) {
      countDecision(s.policy, 'no-edge');
      throw new OcdnError(ErrorCodes.NO_EDGE, `no pathway of session ${id} is healthy (${s.pathways.join(', ')})`);
    }
    countDecision(s.policy, `manifest+${note}`);
    const manifest: SteeringManifest = {
      VERSION: 1,
      TTL: manifestTtlSec,
      'RELOAD-URI': `${baseUrl(req)}/v1/steering/${id}.json`,
      'PATHWAY-PRIORITY': priority,
    };
    sendJson(res, 200, manifest);
    logDecision?.({ sessionId: id, title: s.title, current, throughput, note, priority }, 'steering manifest');
  }

  // ---- routing -------------------------------------------------------------------------
  async function heartbeat(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let hb: ReturnType<typeof validateHeartbeat>;
    try {
      hb = validateHeartbeat(await readJsonBody(req, 8 << 20));
    } catch (err) {
      heartbeatInvalid.inc();
      throw err;
    }
    const state = registry.heartbeat(hb);
    heartbeatOk.inc();
    sendJson(res, 200, { ok: true, id: hb.id, state });
  }

  async function route(req: IncomingMessage, res: ServerResponse, path: string, q: URLSearchParams): Promise<void> {
    const method = req.method ?? 'GET';
    const get = method === 'GET' || method === 'HEAD';
    if (path === '/v1/edges/heartbeat') {
      if (method !== 'POST') return sendText(res, 405, `method ${method} not allowed`, { allow: 'POST' });
      return heartbeat(req, res);
    }
    if (!get) return sendText(res, 405, `method ${method} not allowed`, { allow: 'GET' });
    if (path === '/v1/edges') return sendJson(res, 200, { edges: registry.list() });
    if (path === '/healthz') {
      const c = registry.counts();
      return sendJson(res, 200, {
        ok: true,
        edgesUp: c.up,
        edgesDown: c.down,
        catalog: catalog.loaded ? catalog.size : (catalog.error ?? 'not loaded'),
        policy: defaultPolicy,
      });
    }
    if (path === '/readyz') {
      const ready = catalog.loaded && registry.counts().up > 0;
      return sendJson(res, ready ? 200 : 503, { ready, catalog: catalog.loaded, edgesUp: registry.counts().up });
    }
    if (path === '/metrics') return sendMetrics(res, metrics);
    if (path === '/v1/topology') return sendJson(res, 200, topology.toJSON());
    if (path === '/v1/catalog') return serveCatalog(req, res, catalog);
    let m = /^\/v1\/play\/([^/]+)\/master\.m3u8$/.exec(path);
    if (m) return playMaster(req, res, safeDecode(m[1]!), q);
    m = /^\/v1\/steering\/([^/]+)\.json$/.exec(path);
    if (m) return steeringManifest(req, res, m[1]!, q);
    return sendText(res, 404, `not found: ${path.slice(0, 200)} (try /v1/steer, /v1/edges, /v1/play/{title}/master.m3u8, /healthz, /metrics)`);
  }

  function fail(res: ServerResponse, err: unknown, req: IncomingMessage): void {
    const code = err instanceof OcdnError ? err.code : ErrorCodes.INTERNAL;
    const status = STATUS[code] ?? 500;
    if (status >= 500 && status !== 503) log.error({ err: describeError(err), url: req.url?.slice(0, 200) }, 'request failed');
    else if (debug) log.debug({ err: describeError(err), url: req.url?.slice(0, 200), status }, 'request refused');
    if (res.headersSent) return void res.destroy();
    // Retry-After tells players and edges when asking again may help.
    const headers: Record<string, string> = status === 503 ? { 'retry-after': '1' } : {};
    sendJson(res, status, { error: code, reason: err instanceof Error ? err.message : String(err) }, headers);
  }

  const server = createServer({ keepAliveTimeout: 5_000, headersTimeout: 10_000, requestTimeout: 30_000 }, (req, res) => {
    const raw = req.url ?? '/';
    const qi = raw.indexOf('?');
    const path = qi === -1 ? raw : raw.slice(0, qi);
    const q = new URLSearchParams(qi === -1 ? '' : raw.slice(qi + 1));
    // The hot path stays synchronous: no promise per decision.
    if (path === '/v1/steer' && (req.method === 'GET' || req.method === 'HEAD')) {
      try {
        steer(req, res, q);
      } catch (err) {
        fail(res, err, req);
      }
      return;
    }
    if (path === '/v1/steer') return sendText(res, 405, `method ${req.method} not allowed`, { allow: 'GET' });
    route(req, res, path, q).catch((err: unknown) => fail(res, err, req));
  });

  await catalog.start();
  const port = await listen(server, opts.port ?? 0, opts.host ?? '127.0.0.1');
  const host = opts.host ?? '127.0.0.1';
  const url = `http://${host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host}:${port}`;
  registry.start();
  log.info(
    {
      url,
      policy: defaultPolicy,
      epsilon,
      tokens: secret !== null,
      tokenTtlSec,
      sites: topology.siteIds,
      catalog: catalog.loaded ? catalog.size : 'not loaded',
    },
    'steering listening',
  );

  let closing: Promise<void> | undefined;
  return {
    url,
    port,
    registry,
    catalog,
    metrics,
    server,
    close() {
      closing ??= (async () => {
        catalog.stop();
        await closeServer(server, 2_000);
        await registry.close();
        log.info('steering closed');
      })();
      return closing;
    },
  };
}

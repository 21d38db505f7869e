/**
 * The web console (`ocdn console serve`): the page, and the API it uses on the cluster's behalf.
 * The page talks to this server only (same origin, no CORS) but for the player, which plays
 * from steering and the edges like any browser. The cluster's admin token and directory stay
 * here; a page holds a session cookie and its CSRF token, nothing else.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Counter, Gauge, type Registry } from 'prom-client';
import { type ConsoleLoginToken, ConsoleChaosTargetSchema, ConsoleOriginOutageSchema, type ConsoleSession, EVENT_BATCH_LIMITS } from '../common/contracts.ts';
import { describeError, ErrorCodes, OcdnError } from '../common/errors.ts';
import { createHardenedServer, type ServerLimits } from '../common/http-server.ts';
import { bodyValidator, closeServer, listen, readBody, readRawBody, sendError, sendJson, sendMethodNotAllowed, statusOf } from '../common/http.ts';
import type { Logger } from '../common/log.ts';
import { createRegistry, sendMetrics } from '../common/metrics.ts';
import { ConsoleAuth } from './auth.ts';
import { type ChaosAction, ChaosRunner } from './chaos.ts';
import { ClusterFeed, clusterSnapshot } from './cluster-feed.ts';
import { QoeRelays } from './qoe-relay.ts';
import { checkStreamCap } from './sse.ts';
import { StaticAssets } from './static.ts';

export interface ConsoleOptions {
  port: number;
  host?: string;
  /** Where users reach the console (login URLs); default http://host:port. */
  publicUrl?: string;
  steeringUrl: string;
  aggregatorUrl: string;
  /** The cluster whose components the chaos buttons act on (scripts/chaos.ts reads its cluster.json). */
  clusterDir: string;
  adminToken: string;
  /** How often the cluster view is refreshed while a page watches (default 1 s). */
  pollIntervalMs?: number;
  loginTtlMs?: number;
  sessionTtlMs?: number;
  /** Open page streams (cluster + QoE) in all (default 64). */
  maxStreams?: number;
  /** Distinct QoE queries relayed at once, one upstream stream each (default 8). */
  maxQoeQueries?: number;
  limits?: ServerLimits;
  log: Logger;
  defaultMetrics?: boolean;
}

export interface ConsoleServer {
  url: string;
  port: number;
  registry: Registry;
  /** A one-time login URL (what POST /api/login-tokens answers). */
  mintLogin(): ConsoleLoginToken;
  /** Every path of the page and its assets. */
  assetPaths(): string[];
  close(): Promise<void>;
}

/**
 * No inline script or style, no frames, nothing from another host but what the player fetches
 * (steering and edges: any http(s) origin, as they may live on other machines).
 */
const SECURITY_HEADERS: Record<string, string> = {
  'content-security-policy':
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self' blob:; worker-src 'self' blob:; " +
    "connect-src 'self' http: https:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  // The login URL carries a token: never sent on as a Referer.
  'referrer-policy': 'no-referrer',
  'cross-origin-opener-policy': 'same-origin',
};

const checkTarget = bodyValidator(ConsoleChaosTargetSchema, 'chaos target');
const checkOutage = bodyValidator(ConsoleOriginOutageSchema, 'origin outage');

export async function startConsole(o: ConsoleOptions): Promise<ConsoleServer> {
  const log = o.log;
  const host = o.host ?? '127.0.0.1';
  const registry = createRegistry({ defaultMetrics: o.defaultMetrics ?? false });
  const registers = [registry];
  const auth = new ConsoleAuth({ adminToken: o.adminToken, loginTtlMs: o.loginTtlMs, sessionTtlMs: o.sessionTtlMs });
  const assets = new StaticAssets();
  const maxStreams = o.maxStreams ?? 64;

  const m = {
    requests: new Counter({ name: 'ocdn_console_requests_total', help: 'Requests answered, by route and status', labelNames: ['route', 'status'], registers }),
    logins: new Counter({
      name: 'ocdn_console_logins_total',
      help: 'Login token exchanges (ok: a session made; refused: unknown, expired or spent token)',
      labelNames: ['result'],
      registers,
    }),
    loginTokens: new Counter({ name: 'ocdn_console_login_tokens_minted_total', help: 'One-time login tokens minted (POST /api/login-tokens)', registers }),
    chaos: new Counter({
      name: 'ocdn_console_chaos_actions_total',
      help: 'Chaos actions run from the page, by action and result',
      labelNames: ['action', 'result'],
      registers,
    }),
    events: new Counter({
      name: 'ocdn_console_events_relayed_total',
      help: 'POST /api/events batches relayed to the aggregator, by its status',
      labelNames: ['status'],
      registers,
    }),
    polls: new Counter({ name: 'ocdn_console_cluster_polls_total', help: "Polls of steering's GET /v1/edges, by result", labelNames: ['result'], registers }),
  };

  const feed = new ClusterFeed({
    steeringUrl: o.steeringUrl,
    intervalMs: o.pollIntervalMs ?? 1_000,
    log,
    onPoll: (ok) => m.polls.inc({ result: ok ? 'ok' : 'failed' }),
  });
  const relays = new QoeRelays({ aggregatorUrl: o.aggregatorUrl, maxRelays: o.maxQoeQueries ?? 8, log });
  const chaos = new ChaosRunner(o.clusterDir, (action, ok) => m.chaos.inc({ action, result: ok ? 'ok' : 'failed' }));
  const streamsOpen = () => feed.group.size + relays.clients;
  new Gauge({
    name: 'ocdn_console_streams_open',
    help: 'Open page streams, by kind (cluster, qoe)',
    labelNames: ['stream'],
    registers,
    collect() {
      this.set({ stream: 'cluster' }, feed.group.size);
      this.set({ stream: 'qoe' }, relays.clients);
    },
  });
  new Gauge({
    name: 'ocdn_console_sessions',
    help: 'Logged-in console sessions held',
    registers,
    collect() {
      this.set(auth.sessionCount);
    },
  });
  new Gauge({
    name: 'ocdn_console_qoe_upstreams',
    help: "Open upstream streams to the aggregator's GET /v1/qoe/stream (one per distinct query)",
    registers,
    collect() {
      this.set(relays.upstreams);
    },
  });

  let baseUrl = o.publicUrl?.replace(/\/+$/, '') ?? '';
  const mintLogin = (): ConsoleLoginToken => {
    const t = auth.mintLogin();
    m.loginTokens.inc();
    return { token: t.token, url: `${baseUrl}/?login=${t.token}`, expiresAt: t.expiresAt };
  };

  /** Passes a peer's answer on as it came (status, JSON or error body). */
  async function relay(res: ServerResponse, url: string, what: string, init: RequestInit = {}): Promise<number> {
    let upstream: Response;
    try {
      upstream = await fetch(url, { ...init, signal: AbortSignal.timeout(10_000) });
    } catch (err) {
      const why = ((err as Error).cause as { code?: string } | undefined)?.code ?? describeError(err);
      throw new OcdnError(ErrorCodes.ORIGIN_UNAVAILABLE, `${what} at ${url}: ${why}`);
    }
    const body = Buffer.from(await upstream.arrayBuffer());
    res.writeHead(upstream.status, {
      'content-type': upstream.headers.get('content-type') ?? 'application/json; charset=utf-8',
      'content-length': body.length,
      'cache-control': 'no-store',
      ...(upstream.headers.get('retry-after') ? { 'retry-after': upstream.headers.get('retry-after')! } : {}),
    });
    res.end(body);
    return upstream.status;
  }

  async function chaosRoute(req: IncomingMessage, res: ServerResponse, action: 'kill-edge' | 'restore' | 'origin-outage'): Promise<void> {
    auth.sessionWithCsrf(req);
    let run: { action: ChaosAction; target: string };
    if (action === 'origin-outage') {
      const { on } = await readBody(req, checkOutage, 4_096);
      run = { action: on ? 'origin-outage-on' : 'origin-outage-off', target: 's3' };
    } else run = { action, target: (await readBody(req, checkTarget, 4_096)).id };
    log.info({ action: run.action, target: run.target, remote: req.socket.remoteAddress }, 'chaos from the console');
    sendJson(res, 200, await chaos.run(run.action, run.target));
  }

  type Handler = (req: IncomingMessage, res: ServerResponse, q: URLSearchParams) => void | Promise<void>;
  const routes = new Map<string, { method: 'GET' | 'POST'; fn: Handler }>([
    ['/healthz', { method: 'GET', fn: (_q, res) => sendJson(res, 200, { status: 'ok', streams: streamsOpen() }) }],
    ['/metrics', { method: 'GET', fn: (_q, res) => sendMetrics(res, registry) }],
    [
      '/api/login-tokens',
      {
        method: 'POST',
        fn: (req, res) => {
          if (!auth.isAdmin(req)) throw new OcdnError(ErrorCodes.UNAUTHORIZED, "minting a login token takes the cluster's admin token (Authorization: Bearer)");
          sendJson(res, 201, mintLogin());
        },
      },
    ],
    [
      '/api/session',
      {
        method: 'GET',
        fn: (req, res) => {
          const s = auth.session(req);
          const body: ConsoleSession = { csrfToken: s.csrfToken, steeringUrl: o.steeringUrl, expiresAt: s.expiresAt };
          sendJson(res, 200, body);
        },
      },
    ],
    [
      '/api/logout',
      {
        method: 'POST',
        fn: (req, res) => {
          auth.sessionWithCsrf(req);
          auth.logout(req);
          res.writeHead(204, { 'set-cookie': 'ocdn_console=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0' });
          res.end();
        },
      },
    ],
    [
      '/api/cluster',
      {
        method: 'GET',
        fn: async (req, res) => {
          auth.session(req);
          sendJson(res, 200, await clusterSnapshot(o.steeringUrl));
        },
      },
    ],
    [
      '/api/cluster/stream',
      {
        method: 'GET',
        fn: (req, res) => {
          auth.session(req);
          checkStreamCap(streamsOpen(), maxStreams);
          feed.group.add(res);
        },
      },
    ],
    [
      '/api/qoe/stream',
      {
        method: 'GET',
        fn: async (req, res, q) => {
          auth.session(req);
          checkStreamCap(streamsOpen(), maxStreams);
          await relays.open(req, res, q);
        },
      },
    ],
    [
      '/api/catalog',
      {
        method: 'GET',
        fn: async (req, res) => {
          auth.session(req);
          await relay(res, `${o.steeringUrl}/v1/catalog`, 'steering');
        },
      },
    ],
    [
      '/api/events',
      {
        method: 'POST',
        fn: async (req, res) => {
          // No CSRF header: sendBeacon cannot set one, and a beacon changes nothing but QoE counts.
          auth.session(req);
          const body = await readRawBody(req, EVENT_BATCH_LIMITS.maxBodyBytes);
          const type = String(req.headers['content-type'] ?? 'text/plain');
          const status = await relay(res, `${o.aggregatorUrl}/v1/events`, 'the aggregator', { method: 'POST', body, headers: { 'content-type': type } });
          m.events.inc({ status: String(status) });
        },
      },
    ],
    ['/api/chaos/kill-edge', { method: 'POST', fn: (req, res) => chaosRoute(req, res, 'kill-edge') }],
    ['/api/chaos/restore', { method: 'POST', fn: (req, res) => chaosRoute(req, res, 'restore') }],
    ['/api/chaos/origin-outage', { method: 'POST', fn: (req, res) => chaosRoute(req, res, 'origin-outage') }],
  ]);

  function login(req: IncomingMessage, res: ServerResponse, token: string): void {
    let s: ReturnType<ConsoleAuth['login']>;
    try {
      s = auth.login(token);
    } catch (err) {
      m.logins.inc({ result: 'refused' });
      throw err;
    }
    m.logins.inc({ result: 'ok' });
    log.info({ remote: req.socket.remoteAddress }, 'console login');
    res.writeHead(302, { location: '/', 'set-cookie': auth.sessionCookie(s, baseUrl.startsWith('https:')), 'cache-control': 'no-store' });
    res.end();
  }

  const handler = (req: IncomingMessage, res: ServerResponse) => {
    for (const [k, v] of Object.entries(SECURITY_HEADERS)) res.setHeader(k, v);
    const raw = req.url ?? '/';
    const qi = raw.indexOf('?');
    const path = qi === -1 ? raw : raw.slice(0, qi);
    const q = new URLSearchParams(qi === -1 ? '' : raw.slice(qi + 1));
    const route = routes.get(path);
    const label = route ? path : path === '/' && q.has('login') ? 'login' : assets.has(path) ? 'static' : 'unknown';
    res.once('close', () => m.requests.inc({ route: label, status: String(res.statusCode) }));
    const fail = (err: unknown) => {
      if (statusOf(err) >= 500) log.error({ err: describeError(err), path: path.slice(0, 200) }, 'console request failed');
      sendError(res, err);
    };
    try {
      if (route) {
        const ok = req.method === route.method || (route.method === 'GET' && req.method === 'HEAD');
        if (!ok) return void sendMethodNotAllowed(res, req.method, route.method === 'GET' ? 'GET, HEAD' : 'POST');
        const done = route.fn(req, res, q);
        if (done) done.catch(fail);
        return;
      }
      if (req.method !== 'GET' && req.method !== 'HEAD') return void sendMethodNotAllowed(res, req.method, 'GET, HEAD');
      if (path === '/' && q.has('login')) return login(req, res, q.get('login')!);
      assets.serve(req, res, path, {});
    } catch (err) {
      fail(err);
    }
  };

  const hs = createHardenedServer(handler, { limits: o.limits, log, registry, headers: SECURITY_HEADERS });
  const port = await listen(hs.server, o.port, host);
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
  if (baseUrl === '') baseUrl = url;
  log.info({ url, steering: o.steeringUrl, aggregator: o.aggregatorUrl, dir: o.clusterDir }, 'console serving');

  return {
    url,
    port,
    registry,
    mintLogin,
    assetPaths: () => assets.paths(),
    async close() {
      // Streams first: they never end on their own, and the server waits for every connection.
      feed.close();
      relays.close();
      await closeServer(hs.server, 2_000);
    },
  };
}

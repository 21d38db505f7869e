import type { Server } from 'node:http';
import type { Registry } from 'prom-client';
import type { Catalog } from '../common/contracts.ts';
import { HeartbeatVerifier, MIN_EDGE_KEY_LENGTH } from '../common/edge-key.ts';
import { ErrorCodes, OcdnError } from '../common/errors.ts';
import { closeServer, listen } from '../common/http.ts';
import { type CorsOrigins, corsPolicy } from '../common/cors.ts';
import { createHardenedServer, type ServerLimits } from '../common/http-server.ts';
import { createLogger, type Logger } from '../common/log.ts';
import type { OriginReader } from '../origin/reader.ts';
import { TitleCatalog } from './catalog.ts';
import { MasterSource, SessionStore } from './content-steering.ts';
import { createDecisionLog } from './decision-log.ts';
import { createSteeringMetrics } from './metrics.ts';
import { DEFAULT_EPSILON, DEFAULT_POLICY, isPolicyName, POLICY_NAMES, type PolicyName } from './policies.ts';
import { EdgeRegistry, type RegistryOptions } from './registry.ts';
import { steeringRoutes } from './routes.ts';
import { DEFAULT_TOPOLOGY, Topology } from './topology.ts';

export interface SteeringOptions {
  /** 0 (default) = any free port. */
  port?: number;
  host?: string;
  /** Base URL players reach steering at (SERVER-URI, RELOAD-URI); default: the URL it listens on. Never taken from a request's Host header. */
  publicUrl?: string;
  /** Header count, connection cap and per-client share (common/http-server.ts; defaults there). */
  limits?: Pick<ServerLimits, 'maxHeaders' | 'maxConnections' | 'perClientShare'>;
  /** Pages allowed to read answers (CORS): '*' (default) or exact origins (common/cors.ts). */
  corsOrigins?: CorsOrigins;
  policy?: PolicyName;
  topology?: Topology;
  /** HMAC secret shared with the edges; `null` hands out unsigned URLs (edges with tokens off). */
  tokenSecret: string | null;
  /**
   * The cluster's edge key (common/edge-key.ts): heartbeats not signed with a key derived from it
   * are refused. `null` turns edge admission off (tests, benchmarks: anyone may register).
   */
  edgeKey: string | null;
  /** Admission window: a beat's timestamp within ±skewMs of ours, its nonce unseen in it. */
  admission?: { skewMs?: number; maxNonces?: number };
  tokenTtlSec?: number;
  epsilon?: number;
  /** Edges per answer (and pathways per session master). */
  maxEdges?: number;
  /** catalog.json and master playlists come from here… */
  origin?: OriginReader;
  /** …or from a fixed catalog (benchmarks); masters are then made from its renditions. */
  catalog?: Catalog;
  catalogRefreshMs?: number;
  /** TTL of the Content Steering manifest once the registry is steady, seconds (default 30). */
  manifestTtlSec?: number;
  /** Its TTL while edges come, go or move (default 5, at most manifestTtlSec): see content-steering.ts manifestTtl. */
  manifestShortTtlSec?: number;
  registry?: RegistryOptions;
  log?: Logger;
  /** One info line per decision (steer, play master, manifest); otherwise at debug level only. */
  logDecisions?: boolean;
  /** Kafka brokers: every decision is published to the decisions topic (miss classification). None = not published. */
  brokers?: string;
  /** Prefix of the topic names (a cluster's telemetry namespace). */
  topicPrefix?: string;
  /** Where decisions wait while the broker is unreachable (default .ocdn/spill/ocdn-steering-decisions.jsonl). */
  decisionSpillFile?: string;
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

export async function startSteering(opts: SteeringOptions): Promise<Steering> {
  // ---- settings --------------------------------------------------------------------------
  const log = opts.log ?? createLogger('steering');
  const host = opts.host ?? '127.0.0.1';
  const topology = opts.topology ?? new Topology(DEFAULT_TOPOLOGY);
  const defaultPolicy = opts.policy ?? DEFAULT_POLICY;
  const epsilon = opts.epsilon ?? DEFAULT_EPSILON;
  const tokenTtlSec = opts.tokenTtlSec ?? 3_600;
  const maxEdges = opts.maxEdges ?? 5;
  const manifestTtlSec = opts.manifestTtlSec ?? 30;
  const manifestShortTtlSec = Math.min(opts.manifestShortTtlSec ?? 5, manifestTtlSec);
  if (!isPolicyName(defaultPolicy)) throw new OcdnError(ErrorCodes.CONFIG, `unknown policy "${String(defaultPolicy)}" (use ${POLICY_NAMES.join(', ')})`);
  if (!(epsilon >= 0)) throw new OcdnError(ErrorCodes.CONFIG, `epsilon must be ≥ 0 (got ${epsilon})`);
  if (!(tokenTtlSec >= 1)) throw new OcdnError(ErrorCodes.CONFIG, `token TTL must be at least 1 s (got ${tokenTtlSec})`);
  if (opts.edgeKey === undefined)
    throw new OcdnError(ErrorCodes.CONFIG, 'steering needs the edge key to admit edges (edgeKey), or edgeKey: null to admit any heartbeat');
  if (opts.edgeKey !== null && opts.edgeKey.length < MIN_EDGE_KEY_LENGTH)
    throw new OcdnError(ErrorCodes.CONFIG, `the edge key must be at least ${MIN_EDGE_KEY_LENGTH} characters`);
  if (!(maxEdges >= 1)) throw new OcdnError(ErrorCodes.CONFIG, `maxEdges must be at least 1 (got ${maxEdges})`);
  // Decisions are always counted; a line each is opt-in, at 10k decisions/s it would cost more than deciding.
  const logDecision = opts.logDecisions
    ? (o: object, msg: string) => log.info(o, msg)
    : log.isLevelEnabled('debug')
      ? (o: object, msg: string) => log.debug(o, msg)
      : undefined;

  // ---- state -----------------------------------------------------------------------------
  const registry = new EdgeRegistry({ log, ...opts.registry });
  const admission = opts.edgeKey === null ? null : new HeartbeatVerifier(opts.edgeKey, opts.admission);
  const catalog = new TitleCatalog({ reader: opts.origin, static: opts.catalog, refreshMs: opts.catalogRefreshMs, log });
  const masters = new MasterSource(opts.origin);
  const sessions = new SessionStore({ ttlMs: tokenTtlSec * 1000 });
  const metrics = createSteeringMetrics({ registry, catalog, sessions, defaultMetrics: opts.defaultMetrics });
  const decisions = createDecisionLog({
    brokers: opts.brokers,
    topicPrefix: opts.topicPrefix,
    spillFile: opts.decisionSpillFile,
    log,
    registry: metrics.registry,
  });

  // ---- handlers (steering/routes.ts) -----------------------------------------------------
  // Known once listening; no answer is built before then.
  let publicUrl = opts.publicUrl?.replace(/\/+$/, '') ?? '';
  const handle = steeringRoutes({
    log,
    logDecision,
    topology,
    defaultPolicy,
    epsilon,
    tokenTtlSec,
    maxEdges,
    manifestTtlSec,
    manifestShortTtlSec,
    secret: opts.tokenSecret,
    publicUrl: () => publicUrl,
    registry,
    admission,
    catalog,
    masters,
    sessions,
    metrics,
    decisions,
  });

  // ---- lifecycle -------------------------------------------------------------------------
  const { server } = createHardenedServer(handle, {
    limits: opts.limits,
    log,
    registry: metrics.registry,
    cors: corsPolicy({ origins: opts.corsOrigins ?? '*', methods: ['GET', 'HEAD', 'POST'] }),
  });
  await catalog.start();
  const port = await listen(server, opts.port ?? 0, host);
  const url = `http://${host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host}:${port}`;
  if (publicUrl === '') publicUrl = url;
  registry.start();
  log.info(
    {
      url,
      publicUrl,
      policy: defaultPolicy,
      epsilon,
      tokens: opts.tokenSecret !== null,
      edgeAdmission: admission !== null ? 'signed heartbeats only' : 'off: any heartbeat is admitted',
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
    metrics: metrics.registry,
    server,
    close() {
      closing ??= (async () => {
        catalog.stop();
        await closeServer(server, 2_000);
        await registry.close();
        await decisions?.close();
        log.info('steering closed');
      })();
      return closing;
    },
  };
}

import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import type { Registry } from 'prom-client';
import type { EdgeHeartbeat } from '../common/contracts.ts';
import { ErrorCodes, OcdnError } from '../common/errors.ts';
import { closeServer, listen } from '../common/http.ts';
import { type CorsOrigins, corsPolicy } from '../common/cors.ts';
import { createHardenedServer, type HardenedServer, type ServerLimits } from '../common/http-server.ts';
import { createLogger, type Logger } from '../common/log.ts';
import type { OriginReader } from '../origin/reader.ts';
import { AccessLog } from './access-log.ts';
import { Admin } from './admin.ts';
import { TokenGate } from './auth.ts';
import { DiskTier } from './disk-tier.ts';
import { type CachePolicy, DEFAULT_CACHE_POLICY } from './policies/types.ts';
import { EdgeCache } from './cache.ts';
import { Heartbeat } from './heartbeat.ts';
import { EdgeMetrics } from './metrics.ts';
import { edgeRoutes } from './routes.ts';
import { ParentUpstream, S3Upstream, type Upstream } from './upstream.ts';

export interface EdgeOptions {
  /** `[A-Za-z0-9._-]`, e.g. "edge-1"; appears in X-Edge-Id, Cache-Status and metrics. */
  id: string;
  /** 0 (default) = any free port. */
  port?: number;
  host?: string;
  region: string;
  capacityBytes: number;
  /** Eviction policy of the cache (edge/policies; default lru). */
  cachePolicy?: CachePolicy;
  /** Upstream fetches in flight at most (edge/cache.ts DEFAULT_UPSTREAM_CONCURRENCY). */
  upstreamConcurrency?: number;
  /** Disk tier under the RAM cache (edge/disk-tier.ts): its directory, byte bound and policy (default: cachePolicy). */
  disk?: { dir: string; capacityBytes: number; policy?: CachePolicy };
  /** Where misses go, unless `parentUrl` is given. */
  origin?: OriginReader;
  /** Shield tier: misses go to this edge (same path) instead of S3. */
  parentUrl?: string;
  /** Steering base URL(s) for heartbeats: one, a list, or a comma-separated string of replicas. */
  steeringUrl?: string | readonly string[];
  /** HMAC secret shared with steering; `null` turns token checks off (so does leaving it out). */
  tokenSecret?: string | null;
  /** The cluster's edge key: heartbeats are signed with this edge's key derived from it (common/edge-key.ts). */
  edgeKey?: string;
  /** Bearer token for /admin/*; without it the admin API answers 403. */
  adminToken?: string;
  /** Bytes/s every admin fill of this edge pulls together at most (edge/admin.ts). */
  fillRateCap?: number;
  /** URL players reach this edge at (heartbeats); default http://host:port. */
  publicUrl?: string;
  heartbeatIntervalMs?: number;
  playlistTtlMs?: number;
  segmentTtlMs?: number;
  /** TTL of a cached 404. */
  negativeTtlMs?: number;
  /** Cached 404s held at most (apart from objects; default edge/cache.ts DEFAULT_NEGATIVE_MAX_ENTRIES). */
  negativeMaxEntries?: number;
  staleIfErrorMs?: number;
  /** Parent-tier request timeout (the S3 reader has its own). */
  upstreamTimeoutMs?: number;
  /** Hash each filled body against its declared SHA-256 (default true). */
  verifyHash?: boolean;
  /** Pages allowed to read answers (CORS): '*' (default) or exact origins (common/cors.ts). */
  corsOrigins?: CorsOrigins;
  /** Slowloris and huge-header bounds. */
  headersTimeoutMs?: number;
  requestTimeoutMs?: number;
  keepAliveTimeoutMs?: number;
  maxHeaderSize?: number;
  /** Header count, connection cap and per-client share (common/http-server.ts; defaults there). */
  limits?: Pick<ServerLimits, 'maxHeaders' | 'maxConnections' | 'perClientShare'>;
  /** A response whose client accepts no bytes for this long (checked at this period) is cut. */
  stalledWriteTimeoutMs?: number;
  /** How long close() lets in-flight responses finish before cutting them. */
  drainTimeoutMs?: number;
  /** Requests waiting on upstream above which CMSD-Dynamic reports duress (`du`); default edge/cmsd.ts. */
  duressInFlight?: number;
  /** Kafka brokers: access records go to the access topic (miss classification). None = not published. */
  brokers?: string;
  /** Prefix of the topic names (a cluster's telemetry namespace). */
  topicPrefix?: string;
  /** Share of responses with an access record, 0..1 (default 1). */
  accessSample?: number;
  /** Where access records wait while the broker is unreachable (default .ocdn/spill/ocdn-edge-access-<id>.jsonl). */
  accessSpillFile?: string;
  log?: Logger;
  /** process_* and nodejs_* metrics too (the CLI turns this on; in-process clusters leave it off). */
  defaultMetrics?: boolean;
}

export interface Edge {
  id: string;
  /** Base URL, no trailing slash. */
  url: string;
  port: number;
  registry: Registry;
  cache: EdgeCache;
  /** The disk tier, when there is one. */
  disk?: DiskTier;
  metrics: EdgeMetrics;
  server: Server;
  /** Requests waiting on upstream right now. */
  readonly inFlight: number;
  /** Stop accepting, finish in-flight responses (bounded by drainTimeoutMs), release everything. Idempotent. */
  close(): Promise<void>;
}

const ID_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;

export async function startEdge(opts: EdgeOptions): Promise<Edge> {
  // ---- settings --------------------------------------------------------------------------
  if (!ID_PATTERN.test(opts.id)) throw new OcdnError(ErrorCodes.CONFIG, `edge id "${opts.id}" must be 1-64 characters of A-Z a-z 0-9 . _ -`);
  if (!(opts.capacityBytes > 0)) throw new OcdnError(ErrorCodes.CONFIG, `edge capacity must be positive (got ${opts.capacityBytes})`);
  if (!opts.origin && !opts.parentUrl) throw new OcdnError(ErrorCodes.CONFIG, 'an edge needs an origin reader or a parent URL for its misses');
  const id = opts.id;
  const host = opts.host ?? '127.0.0.1';
  const log = opts.log ?? createLogger('edge', { fields: { edge: id } });
  const tokenSecret = opts.tokenSecret ?? null;
  const steeringUrls = (typeof opts.steeringUrl === 'string' ? opts.steeringUrl.split(',') : (opts.steeringUrl ?? []))
    .map((u) => u.trim().replace(/\/+$/, ''))
    .filter(Boolean);

  // Edges serve only GET and HEAD; with '*' the CORS fields live in each entry's hit headers.
  const cors = corsPolicy({ origins: opts.corsOrigins ?? '*', methods: ['GET', 'HEAD'] });

  // ---- state -----------------------------------------------------------------------------
  const tokens = tokenSecret === null ? null : new TokenGate(tokenSecret);
  const upstream: Upstream = opts.parentUrl
    ? new ParentUpstream(opts.parentUrl, { timeoutMs: opts.upstreamTimeoutMs ?? 5_000, tokenSecret, edgeId: id })
    : new S3Upstream(opts.origin!);
  // The metrics need the cache's size and the cache needs the metrics: the size is read through
  // this binding, set just below.
  let sized: EdgeCache | undefined;
  let http: HardenedServer | undefined;
  const metrics = new EdgeMetrics({
    edgeId: id,
    cacheStats: () => ({ bytes: sized?.bytes ?? 0, items: sized?.items ?? 0, negativeItems: sized?.negativeItems ?? 0 }),
    bytesWritten: () => http?.bytesWritten() ?? 0,
    defaultMetrics: opts.defaultMetrics,
  });
  const disk = opts.disk
    ? (
        await DiskTier.open({
          dir: opts.disk.dir,
          capacityBytes: opts.disk.capacityBytes,
          policy: opts.disk.policy ?? opts.cachePolicy ?? DEFAULT_CACHE_POLICY,
          log,
          registry: metrics.registry,
        })
      ).tier
    : undefined;
  const cache = new EdgeCache({
    capacityBytes: opts.capacityBytes,
    policy: opts.cachePolicy,
    upstreamConcurrency: opts.upstreamConcurrency,
    disk,
    upstream,
    metrics,
    edgeId: id,
    cacheStatusName: `ocdn-${id}`,
    playlistTtlMs: opts.playlistTtlMs ?? 5_000,
    segmentTtlMs: opts.segmentTtlMs ?? 3_600_000,
    negativeTtlMs: opts.negativeTtlMs ?? 2_000,
    negativeMaxEntries: opts.negativeMaxEntries,
    staleIfErrorMs: opts.staleIfErrorMs ?? 86_400_000,
    verifyHash: opts.verifyHash ?? true,
    hitHeaders: cors.fixed,
  });
  sized = cache;
  const admin = new Admin({
    cache,
    adminToken: opts.adminToken,
    log,
    upstream,
    disk,
    edgeId: id,
    fillRateCap: opts.fillRateCap,
    peerTimeoutMs: opts.upstreamTimeoutMs ?? 5_000,
  });
  const access =
    opts.brokers !== undefined && opts.brokers !== ''
      ? new AccessLog({
          edgeId: id,
          brokers: opts.brokers,
          topicPrefix: opts.topicPrefix,
          sample: opts.accessSample,
          spillFile: opts.accessSpillFile,
          log,
          registry: metrics.registry,
        })
      : undefined;
  if (!access) log.info('no Kafka brokers (--brokers, KAFKA_BROKERS): access records are not published, so misses cannot be classified');

  // ---- handlers (edge/routes.ts) ---------------------------------------------------------
  const routes = edgeRoutes({
    id,
    log,
    tokens,
    upstream,
    cache,
    metrics,
    admin,
    negativeTtlMs: opts.negativeTtlMs ?? 2_000,
    duressInFlight: opts.duressInFlight,
    access,
  });

  // ---- lifecycle -------------------------------------------------------------------------
  http = createHardenedServer(routes.handle, {
    limits: {
      headersTimeoutMs: opts.headersTimeoutMs,
      requestTimeoutMs: opts.requestTimeoutMs,
      keepAliveTimeoutMs: opts.keepAliveTimeoutMs,
      maxHeaderSize: opts.maxHeaderSize,
      ...opts.limits,
    },
    log,
    registry: metrics.registry,
    headers: { 'x-edge-id': id },
    cors,
  });
  const { server, sockets } = http;
  // Clients that stop reading a response (slow-read) are cut by a periodic sweep rather than
  // server.timeout: a socket timeout re-arms timers on every request and write, a cost the hit
  // path pays per request; the sweep costs one pass over open sockets per interval.
  const lastWritten = new WeakMap<Socket, number>();
  const sweep = setInterval(() => {
    for (const s of sockets) {
      const written = s.bytesWritten;
      // Output pending and not one more byte accepted by the kernel since the last sweep.
      if (s.writableLength > 0 && lastWritten.get(s) === written) s.destroy();
      else lastWritten.set(s, written);
    }
  }, opts.stalledWriteTimeoutMs ?? 60_000);
  sweep.unref();

  const port = await listen(server, opts.port ?? 0, host);
  const url = `http://${host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host}:${port}`;
  const publicUrl = (opts.publicUrl ?? url).replace(/\/+$/, '');

  // Heartbeats need the public URL, known once listening.
  let last = { at: Date.now(), requests: 0, bytes: 0 };
  const buildHeartbeat = (healthy: boolean): EdgeHeartbeat => {
    const now = Date.now();
    const dt = Math.max(0.001, (now - last.at) / 1000);
    const hb: EdgeHeartbeat = {
      id,
      url: publicUrl,
      region: opts.region,
      capacityBytes: opts.capacityBytes,
      usedBytes: cache.bytes,
      ...(disk ? { diskCapacityBytes: disk.capacityBytes, diskUsedBytes: disk.bytes } : {}),
      inFlight: routes.inFlight,
      rps: Math.round(((metrics.requestCount - last.requests) / dt) * 10) / 10,
      egressBps: Math.round(((metrics.bytesServed - last.bytes) * 8) / dt),
      healthy,
      titles: cache.titles(),
      ts: now,
      ...(opts.parentUrl ? { parent: opts.parentUrl } : {}),
    };
    last = { at: now, requests: metrics.requestCount, bytes: metrics.bytesServed };
    return hb;
  };
  const heartbeat = steeringUrls.length
    ? new Heartbeat({ steeringUrls, intervalMs: opts.heartbeatIntervalMs ?? 1_000, build: () => buildHeartbeat(!routes.draining), log, edgeKey: opts.edgeKey })
    : undefined;
  heartbeat?.start();

  log.info(
    {
      id,
      url,
      publicUrl,
      port,
      region: opts.region,
      capacityBytes: opts.capacityBytes,
      cachePolicy: cache.policy,
      ...(disk ? { disk: { dir: opts.disk!.dir, capacityBytes: disk.capacityBytes, objects: disk.items, bytes: disk.bytes } } : {}),
      upstream: upstream.kind,
      parent: opts.parentUrl,
      steering: steeringUrls,
      tokens: tokens !== null,
      signedHeartbeats: opts.edgeKey !== undefined,
      accessLog: log.isLevelEnabled('debug') ? 'all requests (debug)' : 'non-hits (info); hits at debug',
    },
    'edge listening',
  );

  let closing: Promise<void> | undefined;
  return {
    id,
    url,
    port,
    registry: metrics.registry,
    cache,
    disk,
    metrics,
    server,
    get inFlight() {
      return routes.inFlight;
    },
    close() {
      closing ??= (async () => {
        routes.drain();
        admin.close();
        await heartbeat?.stop(buildHeartbeat(false));
        await closeServer(server, opts.drainTimeoutMs ?? 10_000);
        // Queued disk writes finish: what was filled is there after a clean stop.
        await disk?.idle();
        clearInterval(sweep);
        await upstream.close();
        await access?.close();
        log.info({ id }, 'edge closed');
      })();
      return closing;
    },
  };
}

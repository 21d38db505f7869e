import { join } from 'node:path';
import type { Command } from 'commander';
import { DEFAULT_PORTS, readContext } from '../common/cluster-context.ts';
import { addDirOption } from '../common/command-config.ts';
import { CORS_ORIGINS_FIELD, CORS_ORIGINS_HELP, corsOriginsOption } from '../common/cors.ts';
import { collectProblems, ConfigError, loadConfig } from '../common/config.ts';
import { createLogger } from '../common/log.ts';
import { ADMIN_TOKEN, EDGE_KEY, requireSecret, resolveSecret, TOKEN_SECRET } from '../common/secrets.ts';
import { Shutdown } from '../common/shutdown.ts';
import { addS3Options, loadS3Config } from '../origin/s3-config.ts';
import { CACHE_POLICIES, type CachePolicy, DEFAULT_CACHE_POLICY } from '../edge/policies/types.ts';
import { DEFAULT_UPSTREAM_CONCURRENCY } from '../edge/defaults.ts';
import { DEFAULT_DURESS_IN_FLIGHT } from '../edge/cmsd.ts';

export const edgeServeSpec = {
  id: { type: 'string', flag: '--id', env: 'OCDN_EDGE_ID', required: true, pattern: /^[A-Za-z0-9._-]{1,64}$/ },
  port: { type: 'int', flag: '--port', env: 'OCDN_EDGE_PORT', default: DEFAULT_PORTS.edge(0), min: 0, max: 65_535 },
  host: { type: 'string', flag: '--host', env: 'OCDN_EDGE_HOST', default: '127.0.0.1' },
  region: { type: 'string', flag: '--region', env: 'OCDN_EDGE_REGION', default: 'local', pattern: /^[A-Za-z0-9._-]{1,64}$/ },
  capacity: { type: 'bytes', flag: '--capacity', env: 'OCDN_EDGE_CAPACITY', default: '512MB', min: 64 * 1024 },
  policy: { type: 'enum', flag: '--policy', env: 'OCDN_EDGE_POLICY', values: CACHE_POLICIES, default: DEFAULT_CACHE_POLICY },
  upstreamConcurrency: { type: 'int', flag: '--upstream-concurrency', default: DEFAULT_UPSTREAM_CONCURRENCY, min: 1, max: 10_000 },
  fillRateCap: { type: 'bytes', flag: '--fill-rate-cap', env: 'OCDN_EDGE_FILL_RATE_CAP', min: 1024 },
  diskDir: { type: 'string', flag: '--disk-dir', env: 'OCDN_EDGE_DISK_DIR' },
  diskCapacity: { type: 'bytes', flag: '--disk-capacity', env: 'OCDN_EDGE_DISK_CAPACITY', min: 1 << 20 },
  parent: { type: 'url', flag: '--parent', env: 'OCDN_EDGE_PARENT' },
  steering: { type: 'urls', flag: '--steering', env: 'OCDN_STEERING_URL', ctx: 'steeringUrl' },
  publicUrl: { type: 'url', flag: '--public-url', env: 'OCDN_EDGE_PUBLIC_URL' },
  playlistTtl: { type: 'duration', flag: '--playlist-ttl', default: '5s', min: 1 },
  segmentTtl: { type: 'duration', flag: '--segment-ttl', default: '1h', min: 1 },
  negativeTtl: { type: 'duration', flag: '--negative-ttl', default: '2s', min: 1 },
  staleIfError: { type: 'duration', flag: '--stale-if-error', default: '24h' },
  originTimeout: { type: 'duration', flag: '--origin-timeout', default: '5s', min: 10 },
  heartbeatInterval: { type: 'duration', flag: '--heartbeat-interval', default: '1s', min: 50 },
  drainTimeout: { type: 'duration', flag: '--drain-timeout', default: '10s' },
  duressInFlight: { type: 'int', flag: '--duress-in-flight', env: 'OCDN_EDGE_DURESS_IN_FLIGHT', default: DEFAULT_DURESS_IN_FLIGHT, min: 0 },
  // Only when given (no cluster default): an edge without Kafka publishes no access records.
  brokers: { type: 'string', flag: '--brokers', env: 'KAFKA_BROKERS' },
  topicPrefix: { type: 'string', flag: '--topic-prefix', default: '' },
  spillDir: { type: 'string', flag: '--spill-dir', env: 'OCDN_SPILL_DIR', default: '.ocdn/spill' },
  accessSample: { type: 'number', flag: '--access-sample', env: 'OCDN_EDGE_ACCESS_SAMPLE', default: 1, min: 0, max: 1 },
  corsOrigins: CORS_ORIGINS_FIELD,
} as const;

export function registerEdge(program: Command): void {
  const edge = program.command('edge').description('edge cache node (byte-bounded cache, LRU, SIEVE or S3-FIFO, in front of S3)');
  const serve = edge
    .command('serve')
    .description(
      'serve GET/HEAD /vod/... from a byte-bounded cache; misses go to --parent (shield tier) or S3. ' +
        'Also /healthz, /readyz, /metrics, POST /admin/fill and /admin/purge (bearer admin token). ' +
        'Secrets (token secret, admin token, edge key) come from a file, the environment or the cluster, never from argv. ' +
        'Access log: requests that are not plain hits at info, hits too at OCDN_LOG_LEVEL=debug.',
    )
    .option('--id <id>', 'edge id, e.g. edge-1 (env OCDN_EDGE_ID)')
    .option('--port <port>', 'port, 0 = any free port (env OCDN_EDGE_PORT) [default 8401]')
    .option('--host <addr>', 'listen address (env OCDN_EDGE_HOST) [default 127.0.0.1]')
    .option('--region <region>', 'region reported to steering (env OCDN_EDGE_REGION) [default local]')
    .option('--capacity <bytes>', 'cache capacity, e.g. 512MB, 2GiB (env OCDN_EDGE_CAPACITY) [default 512MB]')
    .option('--policy <name>', `eviction policy: ${CACHE_POLICIES.join(', ')} (env OCDN_EDGE_POLICY) [default ${DEFAULT_CACHE_POLICY}]`)
    .option('--upstream-concurrency <n>', `upstream fetches in flight at most; more misses wait, holding no body [default ${DEFAULT_UPSTREAM_CONCURRENCY}]`)
    .option(
      '--fill-rate-cap <bytes/s>',
      'bytes per second all admin fills of this edge pull together at most, e.g. 20MB (env OCDN_EDGE_FILL_RATE_CAP) [default: no edge-wide cap]',
    )
    .option('--disk-dir <dir>', 'disk tier: every fill is also kept here and survives a restart (env OCDN_EDGE_DISK_DIR); needs --disk-capacity')
    .option('--disk-capacity <bytes>', 'disk tier bound, e.g. 10GB (env OCDN_EDGE_DISK_CAPACITY); needs --disk-dir')
    .option('--parent <url>', 'shield tier: send misses to this edge instead of S3 (env OCDN_EDGE_PARENT)')
    .option('--steering <urls>', "steering base URL(s) for heartbeats, comma-separated for several replicas (env OCDN_STEERING_URL) [default: the cluster's]")
    .option('--public-url <url>', 'URL players reach this edge at, sent in heartbeats [default http://host:port]')
    .option('--token-secret-file <path>', "file holding the URL token HMAC secret shared with steering (else env OCDN_TOKEN_SECRET, else the cluster's)")
    .option('--no-tokens', 'serve without URL tokens (explicit opt-out)')
    .option('--admin-token-file <path>', "file holding the bearer token for /admin/* (else env OCDN_ADMIN_TOKEN, else the cluster's); without one admin is off")
    .option('--edge-key-file <path>', "file holding the cluster's edge key that signs heartbeats (else env OCDN_EDGE_KEY, else the cluster's)")
    .option('--no-edge-auth', 'send unsigned heartbeats (only a steering started with --no-edge-auth takes them)')
    .option('--playlist-ttl <time>', 'freshness of playlists [default 5s]')
    .option('--segment-ttl <time>', 'freshness of segments and other objects [default 1h]')
    .option('--negative-ttl <time>', 'how long a 404 is remembered [default 2s]')
    .option('--stale-if-error <time>', 'how long past expiry a copy may be served when upstream fails [default 24h]')
    .option('--origin-timeout <time>', 'per-attempt upstream timeout [default 5s]')
    .option('--heartbeat-interval <time>', 'heartbeat period [default 1s]')
    .option('--drain-timeout <time>', 'on SIGTERM, how long in-flight responses may take [default 10s]')
    .option(
      '--duress-in-flight <n>',
      `requests waiting on upstream above which answers carry CMSD-Dynamic du (duress; also while draining) (env OCDN_EDGE_DURESS_IN_FLIGHT) [default ${DEFAULT_DURESS_IN_FLIGHT}]`,
    )
    .option(
      '--brokers <list>',
      'Kafka brokers host:port,…: publish access records to ocdn.edge.access.v1 for miss classification (env KAFKA_BROKERS) [default: none]',
    )
    .option('--topic-prefix <p>', 'prefix for the topic names [default none]')
    .option('--spill-dir <dir>', 'where records wait while Kafka is unreachable (env OCDN_SPILL_DIR) [default .ocdn/spill]')
    .option('--access-sample <share>', 'share of responses with an access record, 0..1 (env OCDN_EDGE_ACCESS_SAMPLE) [default 1]')
    .option('--cors-origins <list>', CORS_ORIGINS_HELP);
  addS3Options(addDirOption(serve));
  serve.action(async (flags: Record<string, unknown>) => {
    const { tokens, edgeAuth, tokenSecretFile, adminTokenFile, edgeKeyFile, ...rest } = flags;
    const problems: string[] = [];
    const ctx = readContext(flags.dir);
    const cfg = collectProblems(problems, () => loadConfig(edgeServeSpec, rest, process.env, ctx.values));
    const s3 = collectProblems(problems, () => loadS3Config(rest, process.env, ctx.values));
    const corsOrigins = cfg ? corsOriginsOption(cfg.corsOrigins, problems) : undefined;
    // Tokens are on unless turned off explicitly: a forgotten secret must not open the edge.
    if (tokens === false && tokenSecretFile !== undefined) problems.push('--token-secret-file and --no-tokens contradict each other: pick one');
    const tokenSecret =
      tokens === false
        ? undefined
        : requireSecret(TOKEN_SECRET, tokenSecretFile, problems, 'pass --no-tokens to serve without URL tokens', process.env, ctx.values);
    const adminToken = resolveSecret(ADMIN_TOKEN, adminTokenFile, problems, process.env, ctx.values);
    // Beats are signed unless turned off explicitly, as tokens are.
    if (edgeAuth === false && edgeKeyFile !== undefined) problems.push('--edge-key-file and --no-edge-auth contradict each other: pick one');
    const beats = (cfg?.steering?.length ?? 0) > 0;
    const edgeKey =
      edgeAuth === false
        ? undefined
        : beats
          ? requireSecret(EDGE_KEY, edgeKeyFile, problems, 'pass --no-edge-auth to send unsigned heartbeats', process.env, ctx.values)
          : resolveSecret(EDGE_KEY, edgeKeyFile, problems, process.env, ctx.values);
    if (cfg && (cfg.diskDir === undefined) !== (cfg.diskCapacity === undefined))
      problems.push('--disk-dir and --disk-capacity go together: give both for a disk tier, or neither');
    if (problems.length > 0 || !cfg || !s3) throw new ConfigError(problems);

    const log = createLogger('edge', { fields: { edge: cfg.id } });
    // The edge itself, loaded once the flags are good: the CLI registering `edge serve` does not pay for it.
    const [{ createS3Client }, { OriginReader }, { startEdge }] = await Promise.all([
      import('../origin/s3-client.ts'),
      import('../origin/reader.ts'),
      import('../edge/server.ts'),
    ]);
    const client = createS3Client(s3, { maxAttempts: 1, requestTimeoutMs: cfg.originTimeout });
    const origin = new OriginReader({ client, bucket: s3.bucket, timeoutMs: cfg.originTimeout });
    const edgeNode = await startEdge({
      id: cfg.id,
      port: cfg.port,
      host: cfg.host,
      region: cfg.region,
      capacityBytes: cfg.capacity,
      cachePolicy: cfg.policy as CachePolicy,
      upstreamConcurrency: cfg.upstreamConcurrency,
      fillRateCap: cfg.fillRateCap,
      ...(cfg.diskDir !== undefined && cfg.diskCapacity !== undefined ? { disk: { dir: cfg.diskDir, capacityBytes: cfg.diskCapacity } } : {}),
      origin,
      parentUrl: cfg.parent,
      steeringUrl: cfg.steering,
      publicUrl: cfg.publicUrl,
      tokenSecret: tokenSecret?.value ?? null,
      adminToken: adminToken?.value,
      ...(edgeKey ? { edgeKey: edgeKey.value } : {}),
      playlistTtlMs: cfg.playlistTtl,
      segmentTtlMs: cfg.segmentTtl,
      negativeTtlMs: cfg.negativeTtl,
      staleIfErrorMs: cfg.staleIfError,
      upstreamTimeoutMs: cfg.originTimeout,
      heartbeatIntervalMs: cfg.heartbeatInterval,
      drainTimeoutMs: cfg.drainTimeout,
      duressInFlight: cfg.duressInFlight,
      corsOrigins,
      brokers: cfg.brokers,
      topicPrefix: cfg.topicPrefix,
      accessSpillFile: join(cfg.spillDir, `ocdn-edge-access-${cfg.id}.jsonl`),
      accessSample: cfg.accessSample,
      log,
      defaultMetrics: true,
    });
    const shutdown = new Shutdown({ log, hookTimeoutMs: cfg.drainTimeout + 5_000 });
    shutdown.add('edge', () => edgeNode.close(), 10);
    shutdown.add('s3 client', () => client.destroy(), 90);
    shutdown.installSignalHandlers();
  });
}

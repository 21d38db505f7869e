import { join } from 'node:path';
import type { Command } from 'commander';
import { DEFAULT_PORTS, readContext } from '../common/cluster-context.ts';
import { addDirOption, loadCommandConfig, unreachable } from '../common/command-config.ts';
import { collectProblems, ConfigError, loadConfig } from '../common/config.ts';
import { CORS_ORIGINS_FIELD, CORS_ORIGINS_HELP, corsOriginsOption } from '../common/cors.ts';
import type { SteerResponse } from '../common/contracts.ts';
import { errorMessage } from '../common/http.ts';
import { ErrorCodes, OcdnError } from '../common/errors.ts';
import { createLogger } from '../common/log.ts';
import { EDGE_KEY, requireSecret, TOKEN_SECRET } from '../common/secrets.ts';
import { Shutdown } from '../common/shutdown.ts';
import { addS3Options, loadS3Config } from '../origin/s3-config.ts';
import { POLICY_NAMES, type PolicyName } from '../steering/policies.ts';
import { loadTopologyFile } from '../steering/topology.ts';
import { renderTable } from '../common/table.ts';

export const steeringServeSpec = {
  port: { type: 'int', flag: '--port', env: 'OCDN_STEERING_PORT', default: DEFAULT_PORTS.steering, min: 0, max: 65_535 },
  host: { type: 'string', flag: '--host', env: 'OCDN_STEERING_HOST', default: '127.0.0.1' },
  publicUrl: { type: 'url', flag: '--public-url', env: 'OCDN_STEERING_PUBLIC_URL' },
  policy: { type: 'enum', flag: '--policy', env: 'OCDN_STEERING_POLICY', values: POLICY_NAMES, default: 'hrw-bounded' },
  topology: { type: 'string', flag: '--topology', env: 'OCDN_STEERING_TOPOLOGY' },
  tokenTtl: { type: 'duration', flag: '--token-ttl', default: 3600, min: 1_000 },
  epsilon: { type: 'number', flag: '--epsilon', default: 0.25, min: 0, max: 10 },
  maxEdges: { type: 'int', flag: '--max-edges', default: 5, min: 1, max: 100 },
  heartbeatInterval: { type: 'duration', flag: '--heartbeat-interval', default: '1s', min: 50 },
  missedHeartbeats: { type: 'int', flag: '--missed-heartbeats', default: 3, min: 1, max: 100 },
  probeInterval: { type: 'duration', flag: '--probe-interval', default: '1s' },
  rise: { type: 'int', flag: '--rise', default: 2, min: 1, max: 100 },
  fall: { type: 'int', flag: '--fall', default: 3, min: 1, max: 100 },
  catalogRefresh: { type: 'duration', flag: '--catalog-refresh', default: '30s', min: 100 },
  manifestTtl: { type: 'duration', flag: '--manifest-ttl', default: '30s', min: 1_000 },
  manifestShortTtl: { type: 'duration', flag: '--manifest-short-ttl', default: '5s', min: 1_000 },
  aggregator: { type: 'url', flag: '--aggregator', env: 'OCDN_AGGREGATOR_URL', ctx: 'aggregatorUrl' },
  logDecisions: { type: 'bool', flag: '--log-decisions', env: 'OCDN_LOG_DECISIONS', default: false },
  // Only when given (no cluster default): a steering without Kafka publishes nothing.
  brokers: { type: 'string', flag: '--brokers', env: 'KAFKA_BROKERS' },
  topicPrefix: { type: 'string', flag: '--topic-prefix', default: '' },
  spillDir: { type: 'string', flag: '--spill-dir', env: 'OCDN_SPILL_DIR', default: '.ocdn/spill' },
  corsOrigins: CORS_ORIGINS_FIELD,
} as const;

const steerSpec = {
  title: { type: 'string', flag: '--title', required: true, pattern: /^[A-Za-z0-9._-]{1,128}$/ },
  region: { type: 'string', flag: '--region', pattern: /^[A-Za-z0-9._-]{1,64}$/ },
  isp: { type: 'string', flag: '--isp', pattern: /^[A-Za-z0-9._-]{1,64}$/ },
  policy: { type: 'enum', flag: '--policy', values: POLICY_NAMES },
  steering: { type: 'url', flag: '--steering', env: 'OCDN_STEERING_URL', ctx: 'steeringUrl', default: `http://127.0.0.1:${DEFAULT_PORTS.steering}` },
  timeout: { type: 'duration', flag: '--timeout', default: '5s', min: 10 },
} as const;

export function registerSteering(program: Command): void {
  const steering = program.command('steering').description('steering service: edge registry, ranking, signed URLs, HLS Content Steering');
  const serve = steering
    .command('serve')
    .description(
      'rank healthy edges per playback (GET /v1/steer), serve HLS Content Steering (GET /v1/play/{title}/master.m3u8, ' +
        '/v1/steering/{session}.json), take edge heartbeats (POST /v1/edges/heartbeat), list edges (GET /v1/edges); ' +
        "/healthz, /readyz, /metrics. Titles come from the bucket's catalog.json. Decisions are logged at OCDN_LOG_LEVEL=debug.",
    )
    .option('--port <port>', 'port, 0 = any free port (env OCDN_STEERING_PORT) [default 8400]')
    .option('--host <addr>', 'listen address (env OCDN_STEERING_HOST) [default 127.0.0.1]')
    .option('--public-url <url>', 'URL players reach steering at, for Content Steering URIs [default from the Host header]')
    .option('--policy <name>', `default ranking policy: ${POLICY_NAMES.join(', ')} [default hrw-bounded]`)
    .option('--topology <file>', 'sites, fallback order and coverage zones (JSON); default: us-east, us-west, eu-west')
    .option('--token-secret-file <path>', "file holding the URL token HMAC secret shared with the edges (else env OCDN_TOKEN_SECRET, else the cluster's)")
    .option('--no-tokens', 'hand out unsigned URLs (edges running with --no-tokens)')
    .option(
      '--edge-key-file <path>',
      "file holding the cluster's edge key: only heartbeats signed with it are admitted (else env OCDN_EDGE_KEY, else the cluster's)",
    )
    .option('--no-edge-auth', 'admit unsigned heartbeats from anyone (tests and benchmarks only)')
    .option('--token-ttl <time>', 'token lifetime, e.g. 3600 (seconds) or 1h [default 3600]')
    .option('--epsilon <x>', 'hrw-bounded: skip edges above (1+x) × the mean load of their tier [default 0.25]')
    .option('--max-edges <n>', 'edges per answer and pathways per session [default 5]')
    .option('--heartbeat-interval <time>', 'interval edges heartbeat at [default 1s]')
    .option('--missed-heartbeats <n>', 'an edge silent this many intervals is out [default 3]')
    .option('--probe-interval <time>', 'active /healthz probe period, 0 = off [default 1s]')
    .option('--rise <n>', 'good probes in a row before an edge is back [default 2]')
    .option('--fall <n>', 'failed probes in a row before an edge is out [default 3]')
    .option('--catalog-refresh <time>', 'how often catalog.json is re-read [default 30s]')
    .option('--manifest-ttl <time>', 'TTL of Content Steering manifests while the edges are steady [default 30s]')
    .option('--manifest-short-ttl <time>', 'their TTL while edges come, go or move [default 5s]')
    .option('--aggregator <url>', 'telemetry aggregator URL: edges far above their peers in rebuffering or errors are demoted (reason qoe-demoted)')
    .option('--log-decisions', 'log every decision at info (title, site, policy, ranked edges with reasons); counted in /metrics always')
    .option(
      '--brokers <list>',
      'Kafka brokers host:port,…: publish every decision to ocdn.steering.decisions.v1 for miss classification (env KAFKA_BROKERS) [default: none, not published]',
    )
    .option('--topic-prefix <p>', 'prefix for the topic names [default none]')
    .option('--spill-dir <dir>', 'where records wait while Kafka is unreachable (env OCDN_SPILL_DIR) [default .ocdn/spill]')
    .option('--cors-origins <list>', CORS_ORIGINS_HELP);
  addS3Options(addDirOption(serve));
  serve.action(async (flags: Record<string, unknown>) => {
    const { tokens, edgeAuth, tokenSecretFile, edgeKeyFile, ...rest } = flags;
    const problems: string[] = [];
    const ctx = readContext(flags.dir);
    const cfg = collectProblems(problems, () => loadConfig(steeringServeSpec, rest, process.env, ctx.values));
    const s3 = collectProblems(problems, () => loadS3Config(rest, process.env, ctx.values));
    const corsOrigins = cfg ? corsOriginsOption(cfg.corsOrigins, problems) : undefined;
    // Same rule as the edge: signing is on unless turned off explicitly. Checked on the raw
    // values too, so one run reports these alongside any other bad flag.
    if (tokens === false && tokenSecretFile !== undefined) problems.push('--token-secret-file and --no-tokens contradict each other: pick one');
    const secret =
      tokens === false
        ? undefined
        : requireSecret(TOKEN_SECRET, tokenSecretFile, problems, 'pass --no-tokens to hand out unsigned URLs', process.env, ctx.values);
    // Without the edge key anyone could register an edge and take traffic: refuse to start
    // unless admission is turned off explicitly.
    if (edgeAuth === false && edgeKeyFile !== undefined) problems.push('--edge-key-file and --no-edge-auth contradict each other: pick one');
    const edgeKey =
      edgeAuth === false
        ? undefined
        : requireSecret(EDGE_KEY, edgeKeyFile, problems, 'pass --no-edge-auth to admit unsigned heartbeats', process.env, ctx.values);
    const topologyFile = (flags.topology as string | undefined) ?? (process.env.OCDN_STEERING_TOPOLOGY || undefined);
    let topology: Awaited<ReturnType<typeof loadTopologyFile>> | undefined;
    if (topologyFile !== undefined) {
      try {
        topology = await loadTopologyFile(topologyFile);
      } catch (err) {
        if (err instanceof OcdnError) problems.push(err.message);
        else throw err;
      }
    }
    if (problems.length > 0 || !cfg || !s3) throw new ConfigError(problems);

    const log = createLogger('steering');
    // Steering itself, loaded once the flags are good: the CLI registering the command does not pay for it.
    const [{ createS3Client }, { OriginReader }, { startSteering }, { startQoeFeedback }] = await Promise.all([
      import('../origin/s3-client.ts'),
      import('../origin/reader.ts'),
      import('../steering/server.ts'),
      import('../steering/qoe-feedback.ts'),
    ]);
    const client = createS3Client(s3, { maxAttempts: 1, requestTimeoutMs: 5_000 });
    const origin = new OriginReader({ client, bucket: s3.bucket, timeoutMs: 5_000, retries: 1 });
    const st = await startSteering({
      port: cfg.port,
      host: cfg.host,
      publicUrl: cfg.publicUrl,
      corsOrigins,
      policy: cfg.policy as PolicyName,
      topology,
      tokenSecret: secret?.value ?? null,
      edgeKey: edgeKey?.value ?? null,
      tokenTtlSec: Math.round(cfg.tokenTtl / 1000),
      epsilon: cfg.epsilon,
      maxEdges: cfg.maxEdges,
      origin,
      catalogRefreshMs: cfg.catalogRefresh,
      manifestTtlSec: Math.max(1, Math.round(cfg.manifestTtl / 1000)),
      manifestShortTtlSec: Math.max(1, Math.round(cfg.manifestShortTtl / 1000)),
      registry: {
        heartbeatIntervalMs: cfg.heartbeatInterval,
        missedHeartbeats: cfg.missedHeartbeats,
        probeIntervalMs: cfg.probeInterval,
        rise: cfg.rise,
        fall: cfg.fall,
      },
      log,
      logDecisions: cfg.logDecisions,
      brokers: cfg.brokers,
      topicPrefix: cfg.topicPrefix,
      decisionSpillFile: join(cfg.spillDir, 'ocdn-steering-decisions.jsonl'),
      defaultMetrics: true,
    });
    const feedback = cfg.aggregator ? startQoeFeedback({ aggregatorUrl: cfg.aggregator, registry: st.registry, log }) : undefined;
    const shutdown = new Shutdown({ log, hookTimeoutMs: 5_000 });
    if (feedback) shutdown.add('qoe feedback', () => feedback.stop(), 5);
    shutdown.add('steering', () => st.close(), 10);
    shutdown.add('s3 client', () => client.destroy(), 90);
    shutdown.installSignalHandlers();
  });

  const steer = program
    .command('steer')
    .description('ask steering for the ranked, signed edge list of a title (GET /v1/steer)')
    .option('--title <id>', 'title id, e.g. title-0001')
    .option('--region <region>', 'client region (default: steering places you by your source address)')
    .option('--isp <isp>', 'client ISP label')
    .option('--policy <name>', `ranking policy for this request: ${POLICY_NAMES.join(', ')}`)
    .option('--steering <url>', `steering base URL (env OCDN_STEERING_URL) [default: the cluster's, else http://127.0.0.1:${DEFAULT_PORTS.steering}]`)
    .option('--timeout <time>', 'request timeout [default 5s]')
    .option('--json', 'print the raw JSON answer');
  addDirOption(steer).action(async (flags: Record<string, unknown>) => {
    const { cfg, ctx } = loadCommandConfig(steerSpec, flags);
    const q = new URLSearchParams({ title: cfg.title });
    if (cfg.region) q.set('region', cfg.region);
    if (cfg.isp) q.set('isp', cfg.isp);
    if (cfg.policy) q.set('policy', cfg.policy);
    const target = `${cfg.steering}/v1/steer?${q}`;
    let status: number;
    let text: string;
    try {
      const { request } = await import('undici');
      const res = await request(target, { headersTimeout: cfg.timeout, bodyTimeout: cfg.timeout, signal: AbortSignal.timeout(cfg.timeout) });
      status = res.statusCode;
      text = await res.body.text();
    } catch (err) {
      throw unreachable(ErrorCodes.NO_EDGE, 'steering', steerSpec, cfg, 'steering', ctx, err);
    }
    if (status !== 200) {
      throw new OcdnError(
        status === 404 ? ErrorCodes.NOT_FOUND : status === 400 ? ErrorCodes.USAGE : ErrorCodes.NO_EDGE,
        `steering answered ${status}: ${errorMessage(text).slice(0, 300)}`,
      );
    }
    if (flags.json) {
      process.stdout.write(`${text.trim()}\n`);
      return;
    }
    const body = JSON.parse(text) as SteerResponse;
    const rows = body.edges.map((e, i) => [i + 1, e.id, e.region, e.reason, e.score.toFixed(4), e.url]);
    process.stdout.write(`${renderTable(['#', 'edge', 'region', 'reason', 'score', 'url'], rows)}\n`);
    process.stdout.write(
      `title ${body.title}  policy ${body.policy}${body.site ? `  site ${body.site}` : ''}  session ${body.sessionId}  expires ${new Date(body.expiresAt).toISOString()}\n`,
    );
  });
}

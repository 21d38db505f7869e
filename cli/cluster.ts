import type { Command } from 'commander';
import { loadConfig } from '../common/config.ts';
import { ErrorCodes, OcdnError } from '../common/errors.ts';
import { formatBytes } from '../common/units.ts';
import { defaultClusterOptions } from '../scripts/cluster/options.ts';
import { type ClusterState, contextDir, DEFAULT_BASE_PORT, readContext, requireCluster } from '../common/cluster-context.ts';
import { renderTable } from '../common/table.ts';
import { printClusterTable } from '../scripts/cluster/table.ts';
import { CACHE_POLICIES, DEFAULT_CACHE_POLICY } from '../edge/policies/types.ts';
import { parseCopies, parseWindow } from '../scripts/fill-plan.ts';
import { registerFill } from './fill.ts';
import { registerKafka } from './kafka.ts';

const say = (line: string) => process.stderr.write(`ocdn: ${line}\n`);

// What the commands run is imported when one runs, so `--help` and a mistyped flag load none of it.
const clusterOps = () => import('../scripts/cluster/cluster.ts');
const chaosOps = () => import('../scripts/chaos.ts');

const upSpec = {
  edges: { type: 'int', min: 1, max: 64, default: defaultClusterOptions.edges },
  regions: { type: 'list', default: defaultClusterOptions.regions },
  capacity: { type: 'bytes', min: 1 << 20, default: defaultClusterOptions.capacity },
  s3: { type: 'string', default: 'embedded' },
  kafka: { type: 'string', default: 'local' },
  basePort: { type: 'int', flag: '--base-port', min: 1024, max: 65_000, default: defaultClusterOptions.basePort },
  kafkaPort: { type: 'int', flag: '--kafka-port', min: 1024, max: 65_000, default: defaultClusterOptions.kafkaPort },
  policy: { type: 'enum', values: ['random', 'round-robin', 'least-loaded', 'hash', 'hrw-bounded'], default: 'hrw-bounded' },
  cachePolicy: { type: 'enum', flag: '--cache-policy', values: CACHE_POLICIES, default: DEFAULT_CACHE_POLICY },
  diskCapacity: { type: 'bytes', flag: '--disk-capacity', min: 1 << 20 },
  bucket: { type: 'string', default: 'ocdn-media' },
  fillRateCap: { type: 'bytes', flag: '--fill-rate-cap', min: 1024 },
  fill: { type: 'duration', min: 1000 },
  fillWindow: { type: 'string', flag: '--fill-window', default: 'always' },
  fillBudget: { type: 'bytes', flag: '--fill-budget', min: 1, default: '10GB' },
  fillCopies: { type: 'string', flag: '--fill-copies', default: '2,1' },
  fillTop: { type: 'int', flag: '--fill-top', min: 1, max: 10_000, default: 10 },
} as const;

const DIR_HELP = 'cluster dir (env OCDN_DIR) [default ./.ocdn]';
const UP_DIR_HELP = 'state, data and logs (env OCDN_DIR) [default ./.ocdn]';

const requireState = (dirFlag: unknown): ClusterState => requireCluster(readContext(dirFlag));

function validateS3Kafka(s3: string, kafka: string): void {
  const problems: string[] = [];
  if (s3 !== 'embedded') {
    try {
      const u = new URL(s3);
      if (!/^https?:$/.test(u.protocol)) problems.push(`--s3: "${s3}" must be "embedded" or an http(s) URL`);
    } catch {
      problems.push(`--s3: "${s3}" must be "embedded" or an http(s) URL`);
    }
  }
  if (kafka !== 'local' && !kafka.split(',').every((b) => /^[\w.-]+:\d+$/.test(b.trim())))
    problems.push(`--kafka: "${kafka}" must be "local" or host:port[,host:port…]`);
  if (problems.length) throw new OcdnError(ErrorCodes.CONFIG, problems.join('; '));
}

export function registerCluster(program: Command): void {
  registerKafka(program);
  const cluster = program.command('cluster').description('run a whole local CDN cluster (up, status, down)');

  cluster
    .command('up')
    .description('start S3, Kafka, steering, edges and the aggregator, each as its own process')
    .option('--edges <n>', 'number of edges', String(defaultClusterOptions.edges))
    .option('--regions <list>', 'regions the edges are spread over', defaultClusterOptions.regions.join(','))
    .option('--capacity <bytes>', 'cache capacity per edge', defaultClusterOptions.capacity)
    .option('--s3 <embedded|URL>', 'embedded S3 or an existing S3 endpoint', 'embedded')
    .option('--bucket <name>', 'bucket', 'ocdn-media')
    .option('--kafka <local|BROKERS>', "the project's broker or existing brokers host:port,…", 'local')
    .option('--dir <dir>', UP_DIR_HELP)
    .option('--base-port <port>', 'steering port; edges take the next ones, aggregator +100, S3 +169, console +200', String(defaultClusterOptions.basePort))
    .option('--kafka-port <port>', 'Kafka broker port (controller = +1)', String(defaultClusterOptions.kafkaPort))
    .option('--policy <name>', 'steering policy', 'hrw-bounded')
    .option('--cache-policy <name>', `every edge's eviction policy: ${CACHE_POLICIES.join(', ')}`, DEFAULT_CACHE_POLICY)
    .option('--disk-capacity <bytes>', 'give every edge a disk tier of this size under <dir>/disk/<edge>, kept across restarts')
    .option('--shield', 'add a shield edge (base port + 90) between the edges and S3: one origin GET per object for the cluster')
    .option('--no-console', 'do not start the web console (base port + 200)')
    .option('--fill-rate-cap <bytes/s>', "every edge's fill rate cap, all its fills together (edge serve --fill-rate-cap)")
    .option('--fill <every>', 'run the fill controller, supervised, a cycle this often (e.g. 1m; /healthz and /metrics on base port + 110)')
    .option('--fill-window <HH:MM-HH:MM|always>', 'with --fill: the fill window, local time', 'always')
    .option('--fill-budget <bytes>', 'with --fill: bytes one window may fill', '10GB')
    .option('--fill-copies <list>', 'with --fill: copies per site by popularity tier', '2,1')
    .option('--fill-top <n>', 'with --fill: titles in the manifests', '10')
    .option('--detach', 'return once everything is ready, leaving the cluster running')
    .action(async (flags: Record<string, unknown>) => {
      const { fill, fillWindow, fillBudget, fillCopies, fillTop, fillRateCap, ...cfg } = loadConfig(upSpec, flags);
      validateS3Kafka(cfg.s3, cfg.kafka);
      if (fill !== undefined) {
        parseWindow(fillWindow);
        parseCopies(fillCopies);
      }
      const { clusterUp, clusterDown } = await clusterOps();
      const state = await clusterUp({
        ...cfg,
        ...(fillRateCap !== undefined ? { fillRateCap: String(fillRateCap) } : {}),
        ...(fill !== undefined ? { fill: { every: `${fill}ms`, window: fillWindow, budget: String(fillBudget), copies: fillCopies, top: fillTop } } : {}),
        dir: contextDir(flags.dir),
        capacity: String(cfg.capacity),
        diskCapacity: cfg.diskCapacity === undefined ? undefined : String(cfg.diskCapacity),
        shield: flags.shield === true,
        supervise: true,
        console: flags.console !== false,
        onProgress: say,
      });
      printClusterTable(state);
      if (flags.detach) {
        say(`cluster running; "ocdn cluster status --dir ${contextDir(flags.dir)}" to check, "ocdn cluster down --dir ${contextDir(flags.dir)}" to stop`);
        return;
      }
      say('cluster running; Ctrl-C stops it');
      await new Promise<void>((resolve) => {
        const stop = () => {
          process.off('SIGINT', stop);
          process.off('SIGTERM', stop);
          void clusterDown(contextDir(flags.dir), say).then(() => resolve());
        };
        process.on('SIGINT', stop);
        process.on('SIGTERM', stop);
      });
    });

  cluster
    .command('status')
    .description('health of each component of the running cluster')
    .option('--dir <dir>', DIR_HELP)
    .option('--json', 'machine-readable output')
    .action(async (flags: { dir: string; json?: boolean }) => {
      const { clusterStatus } = await clusterOps();
      const st = await clusterStatus(contextDir(flags.dir));
      if (!st) throw new OcdnError(ErrorCodes.USAGE, `no cluster state in ${contextDir(flags.dir)} (nothing running)`);
      if (flags.json) {
        process.stdout.write(
          `${JSON.stringify(
            st.components.map(({ args: _a, ...c }) => c),
            null,
            2,
          )}\n`,
        );
      } else {
        const rows = st.components.map((c) => [
          c.name,
          c.external ? 'external' : String(c.pid),
          c.alive ? 'yes' : 'NO',
          c.healthy ? 'ok' : 'DOWN',
          c.kind === 'supervisor' || c.external ? '-' : String(c.restarts),
          c.held ? `chaos${c.held.until ? ` until ${c.held.until}` : ' (restore)'}` : '',
          c.loginUrl ?? c.url,
        ]);
        process.stdout.write(`${renderTable(['component', 'pid', 'alive', 'health', 'restarts', 'held', 'url'], rows)}\n`);
      }
      if (st.components.some((c) => !c.healthy)) process.exitCode = 1;
    });

  cluster
    .command('down')
    .description('stop every component cleanly (and clean up after a crash)')
    .option('--dir <dir>', DIR_HELP)
    .action(async (flags: { dir: string }) => {
      const { clusterDown } = await clusterOps();
      const r = await clusterDown(contextDir(flags.dir), say);
      if (r.stopped.length + r.killed.length === 0) say('nothing was running');
      else say(`stopped ${r.stopped.length} component(s)${r.killed.length ? `, killed ${r.killed.join(', ')} after the grace period` : ''}`);
    });

  cluster
    .command('supervise')
    .description('(started by "cluster up") restart crashed components with backoff; /healthz on a free port recorded in cluster.json')
    .option('--dir <dir>', DIR_HELP)
    .option('--interval <time>', 'how often the pids are checked', '500ms')
    .action(async (flags: Record<string, unknown>) => {
      const cfg = loadConfig({ interval: { type: 'duration', min: 50, default: '500ms' } } as const, flags);
      const dir = contextDir(flags.dir);
      requireState(dir);
      const { runSupervisorProcess } = await import('../scripts/cluster/supervisor.ts');
      await runSupervisorProcess({ dir, intervalMs: cfg.interval });
    });

  program
    .command('start')
    .description('the main job (npm start): cluster up, seed a small catalog if empty, players, live QoE; Ctrl-C stops all')
    .option('--players <n>', 'steady player population', '20')
    .option('--edges <n>', 'number of edges', String(defaultClusterOptions.edges))
    .option('--titles <n>', 'titles to seed when the bucket is empty', '10')
    .option('--title-duration <sec>', 'length of each seeded title, seconds', '120')
    .option('--ladder <apple|small>', 'ladder of seeded titles', 'small')
    .option('--dir <dir>', UP_DIR_HELP)
    .option('--base-port <port>', 'steering port; edges take the next ones', String(defaultClusterOptions.basePort))
    .option('--no-watch', 'do not show the live QoE view (returns once players run)')
    .action(async (flags: Record<string, unknown>) => {
      const cfg = loadConfig(
        {
          players: { type: 'int', min: 1, max: 5000, default: 20 },
          edges: { type: 'int', min: 1, max: 64, default: 3 },
          titles: { type: 'int', min: 1, max: 1000, default: 10 },
          titleDuration: { type: 'int', flag: '--title-duration', min: 4, default: 120 },
          ladder: { type: 'enum', values: ['apple', 'small'], default: 'small' },
          basePort: { type: 'int', flag: '--base-port', min: 1024, max: 65_000, default: DEFAULT_BASE_PORT },
        } as const,
        flags,
      );
      const { startAll } = await import('../scripts/cluster/start.ts');
      await startAll({ ...cfg, console: true, dir: contextDir(flags.dir), titleDurationSec: cfg.titleDuration, watch: flags.watch !== false }, say);
    });

  program
    .command('loadtest')
    .description('load-test edges, steering or the whole cluster with autocannon (Zipf URL mix from the catalog)')
    .option('--target <edge|steering|cluster>', 'what to drive', 'cluster')
    .option('-c, --connections <n>', 'concurrent connections', '100')
    .option('-d, --duration <time>', 'duration', '30s')
    .option('--zipf <s>', 'Zipf exponent of title popularity', '0.9')
    .option('--seed <n>', 'seed of the URL mix', '42')
    .option('--policy <name>', 'steering policy that places the URL mix', 'hrw-bounded')
    .option('--workers <n>', 'autocannon worker threads per target (more load than one core of JavaScript can make)')
    .option('--dir <dir>', DIR_HELP)
    .option('--json', 'machine-readable output')
    .action(async (flags: Record<string, unknown>) => {
      const cfg = loadConfig(
        {
          target: { type: 'enum', values: ['edge', 'steering', 'cluster'], default: 'cluster' },
          connections: { type: 'int', min: 1, max: 10_000, default: 100 },
          duration: { type: 'duration', min: 1000, default: '30s' },
          zipf: { type: 'number', min: 0, max: 5, default: 0.9 },
          seed: { type: 'int', default: 42 },
          policy: { type: 'enum', values: ['random', 'round-robin', 'least-loaded', 'hash', 'hrw-bounded'], default: 'hrw-bounded' },
          workers: { type: 'int', min: 1, max: 64 },
        } as const,
        flags,
      );
      const state = requireState(flags.dir);
      const { fetchCatalog } = await import('../scripts/catalog-client.ts');
      const { runLoadtest } = await import('../scripts/loadtest.ts');
      const catalog = await fetchCatalog(state.s3Endpoint, state.bucket);
      if (!catalog) throw new OcdnError(ErrorCodes.USAGE, 'the bucket has no catalog.json yet: run "ocdn content seed" first');
      const edges = state.components.filter((c) => c.kind === 'edge').map((c) => ({ id: c.name, url: c.url }));
      say(`driving ${cfg.target} with ${cfg.connections} connections for ${cfg.duration / 1000} s`);
      const r = await runLoadtest({
        target: cfg.target as 'edge' | 'steering' | 'cluster',
        connections: cfg.connections,
        durationSec: Math.round(cfg.duration / 1000),
        zipf: cfg.zipf,
        seed: cfg.seed,
        policy: cfg.policy,
        workers: cfg.workers,
        catalog,
        steeringUrl: state.steeringUrl,
        edges,
        progress: true,
      });
      if (flags.json) {
        process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
        return;
      }
      const rows: (string | number)[][] = [
        ['requests', r.requests],
        ['req/s', r.reqPerSec.toFixed(0)],
        ['throughput', `${formatBytes(r.bytesPerSec)}/s`],
        ['latency p50', `${r.latencyP50Ms} ms`],
        ['latency p99', `${r.latencyP99Ms} ms`],
        ['errors', r.errors],
        ['non-2xx', r.non2xx],
      ];
      if (r.edgeHitRatio !== undefined)
        rows.push(
          ['edge hit ratio', `${(r.edgeHitRatio * 100).toFixed(1)}%`],
          ['origin fetches', r.originFetches ?? 0],
          ['origin bytes / served', `${((r.originByteShare ?? 0) * 100).toFixed(2)}%`],
        );
      process.stdout.write(`${renderTable(['metric', 'value'], rows)}\n`);
      if (r.perEdge.length) {
        process.stdout.write(
          `\n${renderTable(
            ['edge', 'requests', 'hits', 'origin fetches', 'served MB', 'origin MB'],
            r.perEdge.map((e) => [e.id, e.requests, e.hits, e.originFetches, (e.bytesServed / 1e6).toFixed(1), (e.originBytes / 1e6).toFixed(1)]),
          )}\n`,
        );
      }
      process.stdout.write('\n(autocannon tops out well below the edge on large bodies: use wrk or npm run bench:edge for raw throughput)\n');
    });

  const chaos = program.command('chaos').description('inject faults into the running cluster');
  chaos
    .command('kill-edge [id]')
    .description('SIGKILL an edge (by id, or --random), optionally repeatedly and with restarts')
    .option('--random', 'pick a random running edge')
    .option('--every <time>', 'repeat every interval until Ctrl-C')
    .option('--restart-after <time>', 'restart the edge after this long; without it the supervisor holds it down until "ocdn chaos restore ID"')
    .option('--dir <dir>', DIR_HELP)
    .action(async (id: string | undefined, flags: Record<string, unknown>) => {
      const cfg = loadConfig(
        {
          every: { type: 'duration', min: 1000 },
          restartAfter: { type: 'duration', flag: '--restart-after' },
        } as const,
        flags,
      );
      if (!id && !flags.random) throw new OcdnError(ErrorCodes.USAGE, 'name an edge id or pass --random');
      const { killEdge } = await chaosOps();
      for (;;) {
        await killEdge(contextDir(flags.dir), { id, random: Boolean(flags.random), restartAfterMs: cfg.restartAfter, log: say });
        if (cfg.every === undefined) return;
        await new Promise((r) => setTimeout(r, cfg.every));
      }
    });
  chaos
    .command('restore <id>')
    .description('lift the hold on a component chaos killed: it is started again (by the supervisor when one runs)')
    .option('--dir <dir>', DIR_HELP)
    .action(async (id: string, flags: { dir: string }) => {
      const { restore } = await chaosOps();
      await restore(contextDir(flags.dir), id, say);
    });
  chaos
    .command('kafka-restart')
    .description('stop the local Kafka broker and start it again')
    .option('--dir <dir>', DIR_HELP)
    .action(async (flags: { dir: string }) => (await chaosOps()).kafkaRestart(contextDir(flags.dir), say));
  chaos
    .command('origin-outage')
    .description('take the embedded S3 origin down for a while')
    .option('--for <time>', 'outage length', '20s')
    .option('--dir <dir>', DIR_HELP)
    .action(async (flags: Record<string, unknown>) => {
      const cfg = loadConfig({ for: { type: 'duration', min: 100, default: '20s' } } as const, flags);
      const { originOutage } = await chaosOps();
      await originOutage(contextDir(flags.dir), cfg.for, say);
    });

  registerFill(program);
}

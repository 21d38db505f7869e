import type { Command } from 'commander';
import { contextDir, DEFAULT_PORTS, readContext } from '../common/cluster-context.ts';
import { addDirOption, unreachable } from '../common/command-config.ts';
import { collectProblems, ConfigError, loadConfig } from '../common/config.ts';
import { ErrorCodes, isOcdnError } from '../common/errors.ts';
import { createLogger } from '../common/log.ts';
import { ADMIN_TOKEN, requireSecret } from '../common/secrets.ts';
import { Shutdown } from '../common/shutdown.ts';
import { mintLoginUrl } from '../console/login-client.ts';

export const consoleServeSpec = {
  port: { type: 'int', flag: '--port', env: 'OCDN_CONSOLE_PORT', default: DEFAULT_PORTS.console, min: 0, max: 65_535 },
  host: { type: 'string', flag: '--host', env: 'OCDN_CONSOLE_HOST', default: '127.0.0.1' },
  publicUrl: { type: 'url', flag: '--public-url', env: 'OCDN_CONSOLE_PUBLIC_URL' },
  steering: { type: 'url', flag: '--steering', env: 'OCDN_STEERING_URL', ctx: 'steeringUrl', default: `http://127.0.0.1:${DEFAULT_PORTS.steering}` },
  aggregator: { type: 'url', flag: '--aggregator', env: 'OCDN_AGGREGATOR_URL', ctx: 'aggregatorUrl', default: `http://127.0.0.1:${DEFAULT_PORTS.aggregator}` },
  pollInterval: { type: 'duration', flag: '--poll-interval', default: '1s', min: 100 },
  loginTtl: { type: 'duration', flag: '--login-ttl', default: '1h', min: 1_000 },
  sessionTtl: { type: 'duration', flag: '--session-ttl', default: '12h', min: 60_000 },
} as const;

const urlSpec = {
  url: { type: 'url', flag: '--url', env: 'OCDN_CONSOLE_URL', ctx: 'consoleUrl', default: `http://127.0.0.1:${DEFAULT_PORTS.console}` },
} as const;

export function registerConsole(program: Command): void {
  const cmd = program.command('console').description('web console: live cluster and QoE charts, a player, chaos buttons');
  const serve = cmd
    .command('serve')
    .description(
      'serve the console page and its API (cluster view, QoE streams, player telemetry, chaos); /healthz, /metrics. ' +
        'Login is by one-time URL ("ocdn console url"); the cluster\'s admin token stays in this process.',
    )
    .option('--port <port>', `port, 0 = any free port (env OCDN_CONSOLE_PORT) [default ${DEFAULT_PORTS.console}]`)
    .option('--host <addr>', 'listen address (env OCDN_CONSOLE_HOST) [default 127.0.0.1]')
    .option('--public-url <url>', 'URL users reach the console at, for login URLs [default http://host:port]')
    .option('--steering <url>', `steering base URL (env OCDN_STEERING_URL) [default: the cluster's, else http://127.0.0.1:${DEFAULT_PORTS.steering}]`)
    .option(
      '--aggregator <url>',
      `telemetry aggregator URL (env OCDN_AGGREGATOR_URL) [default: the cluster's, else http://127.0.0.1:${DEFAULT_PORTS.aggregator}]`,
    )
    .option('--admin-token-file <path>', "file holding the cluster's admin token (else env OCDN_ADMIN_TOKEN, else the cluster's)")
    .option('--poll-interval <time>', 'how often the cluster view is refreshed while a page watches [default 1s]')
    .option('--login-ttl <time>', 'how long a one-time login URL stays valid [default 1h]')
    .option('--session-ttl <time>', 'how long a login lasts [default 12h]');
  addDirOption(serve).action(async (flags: Record<string, unknown>) => {
    const { adminTokenFile, ...rest } = flags;
    const problems: string[] = [];
    const ctx = readContext(flags.dir);
    const cfg = collectProblems(problems, () => loadConfig(consoleServeSpec, rest, process.env, ctx.values));
    const admin = requireSecret(ADMIN_TOKEN, adminTokenFile, problems, 'the console mints login URLs and runs chaos with it', process.env, ctx.values);
    if (problems.length > 0 || !cfg || !admin) throw new ConfigError(problems);
    const log = createLogger('console');
    // Loaded once the flags are good: the CLI registering the command does not pay for it.
    const { startConsole } = await import('../console/server.ts');
    const server = await startConsole({
      port: cfg.port,
      host: cfg.host,
      publicUrl: cfg.publicUrl,
      steeringUrl: cfg.steering,
      aggregatorUrl: cfg.aggregator,
      clusterDir: contextDir(flags.dir),
      adminToken: admin.value,
      pollIntervalMs: cfg.pollInterval,
      loginTtlMs: cfg.loginTtl,
      sessionTtlMs: cfg.sessionTtl,
      log,
      defaultMetrics: true,
    });
    // Only to a terminal: a log file may be readable by others, and whoever spends the token first is logged in.
    if (process.stderr.isTTY) process.stderr.write(`ocdn: console at ${server.mintLogin().url}\n`);
    const shutdown = new Shutdown({ log, hookTimeoutMs: 5_000 });
    shutdown.add('console', () => server.close(), 10);
    shutdown.installSignalHandlers();
  });

  const url = cmd
    .command('url')
    .description('print a fresh one-time login URL for the running console (takes the admin token from the cluster)')
    .option('--url <url>', `console base URL (env OCDN_CONSOLE_URL) [default: the cluster's, else http://127.0.0.1:${DEFAULT_PORTS.console}]`)
    .option('--admin-token-file <path>', "file holding the cluster's admin token (else env OCDN_ADMIN_TOKEN, else the cluster's)");
  addDirOption(url).action(async (flags: Record<string, unknown>) => {
    const { adminTokenFile, ...rest } = flags;
    const problems: string[] = [];
    const ctx = readContext(flags.dir);
    const cfg = collectProblems(problems, () => loadConfig(urlSpec, rest, process.env, ctx.values));
    const admin = requireSecret(ADMIN_TOKEN, adminTokenFile, problems, 'login URLs are minted with it', process.env, ctx.values);
    if (problems.length > 0 || !cfg || !admin) throw new ConfigError(problems);
    try {
      process.stdout.write(`${(await mintLoginUrl(cfg.url, admin.value)).url}\n`);
    } catch (err) {
      if (isOcdnError(err, ErrorCodes.NOT_FOUND)) throw unreachable(ErrorCodes.NOT_FOUND, 'the console', urlSpec, cfg, 'url', ctx, err.cause);
      throw err;
    }
  });
}

import type { Command } from 'commander';
import { DEFAULT_KAFKA_PORT, readContext } from '../common/cluster-context.ts';
import { loadConfig } from '../common/config.ts';
import { ErrorCodes, OcdnError } from '../common/errors.ts';
import { createLogger } from '../common/log.ts';
import { Shutdown } from '../common/shutdown.ts';
import { renderTable } from '../common/table.ts';
import { fetchKafkaLibs, KAFKA_VERSION, kafkaDown, kafkaStatus, kafkaUpDetached, startKafka } from '../scripts/kafka.ts';
import { parseBrokers, topicNames } from '../telemetry/topics.ts';

const say = (line: string) => process.stderr.write(`ocdn: ${line}\n`);

/**
 * `--dir` here is the broker's own data folder, so the cluster context comes from OCDN_DIR or
 * ./.ocdn: a running cluster's broker lives in its `kafka/` folder and answers on its brokers.
 */
const kafkaSpec = {
  dir: { type: 'string', env: 'OCDN_KAFKA_DIR', ctx: 'kafkaDir', default: '.ocdn/kafka' },
  port: { type: 'int', min: 1, max: 65_534, default: DEFAULT_KAFKA_PORT, env: 'OCDN_KAFKA_PORT' },
  brokers: { type: 'string', env: 'KAFKA_BROKERS', ctx: 'brokers' },
  controllerPort: { type: 'int', flag: '--controller-port', min: 1, max: 65_535 },
  heap: { type: 'int', flag: '--heap-mb', min: 128, max: 16_384, default: 512 },
  topicPrefix: { type: 'string', flag: '--topic-prefix', default: '' },
} as const;

const loadKafkaConfig = (flags: Record<string, unknown>) => loadConfig(kafkaSpec, flags, process.env, readContext().values);

/** Registered beside the cluster commands: the broker is a part of the cluster. */
export function registerKafka(program: Command): void {
  const kafka = program.command('kafka').description(`local Apache Kafka ${KAFKA_VERSION} broker (KRaft, jars from Maven Central, no Docker)`);

  kafka
    .command('up')
    .description('fetch the jars (once), start a broker+controller on 127.0.0.1 in the background, create the topics')
    .option('--dir <dir>', "data, config and log folder [default: the cluster's kafka/, else .ocdn/kafka]")
    .option('--port <port>', `client port (controller = port + 1) [default ${DEFAULT_KAFKA_PORT}]`)
    .action(async (flags: Record<string, unknown>) => {
      const cfg = loadKafkaConfig(flags);
      const st = await kafkaUpDetached({ dir: cfg.dir, port: cfg.port, onProgress: say });
      say(`Kafka running on ${st.brokers} (pid ${st.pid}); topics: ${(st.topics ?? []).map((t) => `${t.name}[${t.partitions}]`).join(', ')}`);
      say(`stop it with "ocdn kafka down --dir ${cfg.dir}"`);
    });

  kafka
    .command('down')
    .description('stop the broker started by "ocdn kafka up"')
    .option('--dir <dir>', 'folder given to "kafka up" [default: the cluster\'s kafka/, else .ocdn/kafka]')
    .action(async (flags: Record<string, unknown>) => {
      const cfg = loadKafkaConfig(flags);
      const stopped = await kafkaDown(cfg.dir, say);
      if (stopped) say('Kafka stopped');
    });

  kafka
    .command('status')
    .description('is the broker up, and which topics does it hold')
    .option('--dir <dir>', 'folder given to "kafka up" [default: the cluster\'s kafka/, else .ocdn/kafka]')
    .option('--port <port>', `client port [default ${DEFAULT_KAFKA_PORT}]`)
    .option('--brokers <list>', "check these brokers (host:port,…; env KAFKA_BROKERS) [default: the cluster's, else 127.0.0.1:port]")
    .option('--json', 'machine-readable output')
    .action(async (flags: Record<string, unknown>) => {
      const cfg = loadKafkaConfig(flags);
      const brokers = cfg.brokers ? parseBrokers(cfg.brokers).join(',') : `127.0.0.1:${cfg.port}`;
      const st = await kafkaStatus(brokers, cfg.dir);
      if (flags.json) process.stdout.write(`${JSON.stringify(st, null, 2)}\n`);
      else {
        process.stdout.write(`brokers   ${st.brokers}\nreachable ${st.reachable ? 'yes' : `no${st.error ? ` (${st.error})` : ''}`}\n`);
        if (st.pid) process.stdout.write(`pid       ${st.pid} (${st.alive ? 'alive' : 'not running'})\n`);
        if (st.topics?.length)
          process.stdout.write(
            `\n${renderTable(
              ['topic', 'partitions'],
              st.topics.map((t) => [t.name, t.partitions]),
            )}\n`,
          );
      }
      if (!st.reachable) process.exitCode = 1;
    });

  kafka
    .command('run')
    .description('run the broker in the foreground (what "kafka up" and "cluster up" start); SIGTERM stops it cleanly')
    .option('--dir <dir>', 'data, config and log folder [default .ocdn/kafka]')
    .option('--port <port>', `client port [default ${DEFAULT_KAFKA_PORT}]`)
    .option('--controller-port <port>', 'controller port (default port + 1)')
    .option('--heap-mb <mb>', 'JVM heap [default 512]')
    .action(async (flags: Record<string, unknown>) => {
      const cfg = loadKafkaConfig(flags);
      const log = createLogger('kafka');
      const handle = await startKafka({
        dir: cfg.dir,
        port: cfg.port,
        controllerPort: cfg.controllerPort,
        heapMb: cfg.heap,
        output: 'inherit',
        log,
        onProgress: (line) => log.info(line),
      });
      const shutdown = new Shutdown({ log, hookTimeoutMs: 40_000 });
      shutdown.add('kafka', () => handle.stop(30_000));
      shutdown.installSignalHandlers();
      const code = await handle.exited;
      if (!shutdown.started) throw new OcdnError(ErrorCodes.BROKER_UNAVAILABLE, `Kafka exited on its own with code ${code}`);
      await shutdown.run();
    });

  kafka
    .command('fetch')
    .description(`download the Kafka ${KAFKA_VERSION} jars into the cache ($OCDN_KAFKA_LIBS or .ocdn/kafka-libs) if missing`)
    .action(async () => {
      const dir = await fetchKafkaLibs({ log: say });
      say(`Kafka jars ready in ${dir}`);
    });

  kafka
    .command('topics')
    .description('create the ocdn topics on existing brokers (events ≥6 partitions, aggregates compacted, DLQ)')
    .option('--brokers <list>', `host:port,… (env KAFKA_BROKERS) [default: the cluster's, else 127.0.0.1:${DEFAULT_KAFKA_PORT}]`)
    .option('--topic-prefix <p>', 'prefix for the topic names [default none]')
    .action(async (flags: Record<string, unknown>) => {
      const cfg = loadKafkaConfig(flags);
      const topics = topicNames(cfg.topicPrefix);
      const { ensureTopics } = await import('../telemetry/kafka.ts');
      await ensureTopics(parseBrokers(cfg.brokers ?? `127.0.0.1:${cfg.port}`), { topics });
      say(`topics ready: ${Object.values(topics).join(', ')}`);
    });
}

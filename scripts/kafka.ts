/**
 * A real Apache Kafka broker on this machine, without Docker (DESIGN.md "Kafka on this machine"):
 * jars from Maven Central through `mvn dependency:copy-dependencies`, KRaft storage formatted
 * with StorageTool, `kafka.Kafka` run by the machine's Java as one combined broker+controller
 * bound to 127.0.0.1. Used by `ocdn kafka ...`, the cluster, the tests and the benchmark.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ErrorCodes, isOcdnError, OcdnError } from '../common/errors.ts';
import { createLogger, type Logger } from '../common/log.ts';
import { topicNames, type TopicNames } from '../telemetry/topics.ts';
import { isAlive, portInUse } from '../common/ports.ts';
import { waitFor } from '../common/retry.ts';
import { stopProcess } from './cluster/processes.ts';

export const KAFKA_VERSION = '3.9.1';
const SCALA = '2.13';
const SLF4J_VERSION = '1.7.36';
const RELOAD4J_VERSION = '1.2.25';

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Jar cache: $OCDN_KAFKA_LIBS, else .ocdn/kafka-libs in the repository (shared by every checkout user). */
export function kafkaLibsDir(env: NodeJS.ProcessEnv = process.env): string {
  return resolve(env.OCDN_KAFKA_LIBS || join(REPO_ROOT, '.ocdn', 'kafka-libs'));
}

function pomXml(): string {
  return `<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by ocdn (scripts/kafka.ts): only used to fetch the broker's jars. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>ocdn</groupId>
  <artifactId>kafka-libs</artifactId>
  <version>${KAFKA_VERSION}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_${SCALA}</artifactId><version>${KAFKA_VERSION}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId><version>${SLF4J_VERSION}</version></dependency>
    <dependency><groupId>ch.qos.reload4j</groupId><artifactId>reload4j</artifactId><version>${RELOAD4J_VERSION}</version></dependency>
  </dependencies>
</project>
`;
}

function commandExists(cmd: string, args: string[]): boolean {
  const r = spawnSync(cmd, args, { stdio: 'ignore' });
  return !r.error && r.status === 0;
}

/**
 * Fetches the broker's jars once into `<cache>/<version>/` and returns that folder. A finished
 * fetch leaves a `.complete` marker; the copy is made in a temporary folder and renamed, so two
 * processes fetching at once (CI step, tests, cluster) never see half a set of jars.
 */
export async function fetchKafkaLibs(opts: { dir?: string; log?: (line: string) => void } = {}): Promise<string> {
  const cache = resolve(opts.dir ?? kafkaLibsDir());
  const target = join(cache, KAFKA_VERSION);
  if (existsSync(join(target, '.complete'))) return target;
  if (!commandExists('mvn', ['-v'])) {
    throw new OcdnError(
      ErrorCodes.DEPENDENCY_MISSING,
      `Maven is needed once to fetch the Kafka jars into ${cache}: install it with "apt-get install -y maven" (or set OCDN_KAFKA_LIBS to a folder holding them)`,
    );
  }
  await mkdir(cache, { recursive: true });
  await writeFile(join(cache, 'pom.xml'), pomXml());
  const tmp = join(cache, `.fetch-${process.pid}-${randomBytes(3).toString('hex')}`);
  opts.log?.(`fetching org.apache.kafka:kafka_${SCALA}:${KAFKA_VERSION} and its dependencies from Maven Central into ${target}`);
  const out: string[] = [];
  const code = await new Promise<number>((res, rej) => {
    const p = spawn('mvn', ['-B', '-q', '-f', join(cache, 'pom.xml'), 'dependency:copy-dependencies', '-DincludeScope=runtime', `-DoutputDirectory=${tmp}`], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    p.stdout.on('data', (d: Buffer) => out.push(d.toString()));
    p.stderr.on('data', (d: Buffer) => out.push(d.toString()));
    p.on('error', rej);
    p.on('close', (c) => res(c ?? 1));
  });
  if (code !== 0) {
    await rm(tmp, { recursive: true, force: true });
    const tail = out.join('').trim().split('\n').slice(-8).join('\n');
    throw new OcdnError(ErrorCodes.DEPENDENCY_MISSING, `mvn could not fetch the Kafka jars (exit ${code}):\n${tail}`);
  }
  const jars = (await readdir(tmp)).filter((f) => f.endsWith('.jar'));
  if (!jars.includes(`kafka_${SCALA}-${KAFKA_VERSION}.jar`)) {
    await rm(tmp, { recursive: true, force: true });
    throw new OcdnError(ErrorCodes.DEPENDENCY_MISSING, `mvn finished but kafka_${SCALA}-${KAFKA_VERSION}.jar is not among the ${jars.length} jars fetched`);
  }
  await writeFile(join(tmp, '.complete'), `${new Date().toISOString()} ${jars.length} jars\n`);
  try {
    await rename(tmp, target);
  } catch {
    // Another process finished first: its copy is as good as ours.
    await rm(tmp, { recursive: true, force: true });
    if (!existsSync(join(target, '.complete'))) throw new OcdnError(ErrorCodes.DEPENDENCY_MISSING, `could not move the Kafka jars into ${target}`);
  }
  opts.log?.(`fetched ${jars.length} jars`);
  return target;
}

/** The java binary to run, or a DEPENDENCY_MISSING error that says what to install. */
export function findJava(env: NodeJS.ProcessEnv = process.env): string {
  const candidates = [env.JAVA_HOME ? join(env.JAVA_HOME, 'bin', 'java') : undefined, 'java'].filter((x): x is string => Boolean(x));
  for (const java of candidates) {
    const r = spawnSync(java, ['-version'], { encoding: 'utf8', env });
    if (r.error || r.status !== 0) continue;
    const m = /version "(\d+)/.exec(`${r.stderr}${r.stdout}`);
    const major = m ? Number(m[1]) : 0;
    if (major >= 11) return java;
    throw new OcdnError(
      ErrorCodes.DEPENDENCY_MISSING,
      `Kafka ${KAFKA_VERSION} needs Java 11 or newer, found "${(r.stderr || r.stdout).split('\n')[0]}": install openjdk-17-jre-headless (apt-get install -y openjdk-17-jre-headless)`,
    );
  }
  throw new OcdnError(
    ErrorCodes.DEPENDENCY_MISSING,
    'Java is needed to run the Kafka broker and was not found (no java on PATH or in JAVA_HOME): install it with "apt-get install -y openjdk-17-jre-headless"',
  );
}

export interface KafkaOptions {
  /** Data, config and log folder of this broker. */
  dir: string;
  /** Client port on 127.0.0.1 (the controller takes `controllerPort`, default port + 1). */
  port: number;
  controllerPort?: number;
  /** Port clients are told to use (default `port`): a proxy or NAT in front of the broker. */
  advertisedPort?: number;
  heapMb?: number;
  /** Jar folder; fetched when absent. */
  libsDir?: string;
  topics?: TopicNames;
  eventPartitions?: number;
  readyTimeoutMs?: number;
  /** Where the JVM writes stdout/stderr: a file (default `<dir>/server.log`) or 'inherit'. */
  output?: 'file' | 'inherit';
  log?: Logger;
  onProgress?: (line: string) => void;
}

export interface KafkaHandle {
  brokers: string;
  port: number;
  controllerPort: number;
  dir: string;
  pid: number;
  logFile: string | undefined;
  /** Resolves with the exit code when the JVM ends (for whatever reason). */
  exited: Promise<number | null>;
  /** SIGTERM (controlled shutdown), SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
}

function serverProperties(dir: string, port: number, controllerPort: number, advertisedPort = port): string {
  // Comments in .properties must sit on their own line: a trailing "# ..." becomes part of the value.
  return [
    '# written by ocdn (scripts/kafka.ts) on each start',
    'process.roles=broker,controller',
    'node.id=1',
    `controller.quorum.voters=1@127.0.0.1:${controllerPort}`,
    `listeners=PLAINTEXT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${controllerPort}`,
    `advertised.listeners=PLAINTEXT://127.0.0.1:${advertisedPort}`,
    'controller.listener.names=CONTROLLER',
    'inter.broker.listener.name=PLAINTEXT',
    'listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT',
    `log.dirs=${join(dir, 'data')}`,
    'num.partitions=6',
    'default.replication.factor=1',
    'min.insync.replicas=1',
    'offsets.topic.replication.factor=1',
    '# fewer offset partitions than the default 50: group coordinators load faster on a small machine',
    'offsets.topic.num.partitions=6',
    'transaction.state.log.replication.factor=1',
    'transaction.state.log.min.isr=1',
    'transaction.state.log.num.partitions=4',
    '# kafkajs with KRaft fails on auto-creation: topics are created explicitly',
    'auto.create.topics.enable=false',
    'group.initial.rebalance.delay.ms=0',
    'num.network.threads=2',
    'num.io.threads=4',
    '# the 512 MB heap has no room for the default 128 MB dedupe buffer',
    'log.cleaner.dedupe.buffer.size=16777216',
    'log.retention.hours=24',
    'log.segment.bytes=268435456',
    '',
  ].join('\n');
}

const LOG4J = [
  'log4j.rootLogger=WARN, stdout',
  'log4j.appender.stdout=org.apache.log4j.ConsoleAppender',
  'log4j.appender.stdout.layout=org.apache.log4j.PatternLayout',
  'log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n',
  '# start/stop lines are what operators look for',
  'log4j.logger.kafka.server.KafkaRaftServer=INFO',
  'log4j.logger.kafka.server.BrokerServer=INFO',
  '',
].join('\n');

async function clusterId(dir: string): Promise<string> {
  const file = join(dir, 'cluster-id');
  try {
    const id = (await readFile(file, 'utf8')).trim();
    if (id) return id;
  } catch {
    /* first start */
  }
  // Kafka's Uuid: 16 random bytes, URL-safe base64 without padding; like Kafka's own
  // Uuid.randomUuid, never one starting with "-", which tools would read as an option.
  let id = randomBytes(16).toString('base64url');
  while (id.startsWith('-')) id = randomBytes(16).toString('base64url');
  await writeFile(file, `${id}\n`);
  return id;
}

function runJava(java: string, args: string[], cwd: string): Promise<{ code: number; output: string }> {
  return new Promise((res, rej) => {
    const chunks: string[] = [];
    const p = spawn(java, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    p.stdout.on('data', (d: Buffer) => chunks.push(d.toString()));
    p.stderr.on('data', (d: Buffer) => chunks.push(d.toString()));
    p.on('error', rej);
    p.on('close', (code) => res({ code: code ?? 1, output: chunks.join('') }));
  });
}

function tailOf(file: string | undefined, lines = 15): string {
  if (!file) return '';
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

/**
 * Starts a combined KRaft broker+controller and resolves once a kafkajs admin lists topics and
 * the topics exist. The JVM is our child: `stop()` ends it, and so does this process's exit.
 */
export async function startKafka(opts: KafkaOptions): Promise<KafkaHandle> {
  const dir = resolve(opts.dir);
  const port = opts.port;
  const controllerPort = opts.controllerPort ?? port + 1;
  const log = opts.log ?? createLogger('kafka');
  const progress = opts.onProgress ?? ((line: string) => log.info(line));
  const java = findJava();
  const libs = opts.libsDir ?? (await fetchKafkaLibs({ log: progress }));
  const busy = [];
  for (const p of [port, controllerPort]) if (await portInUse(p)) busy.push(p);
  if (busy.length)
    throw new OcdnError(
      ErrorCodes.PORT_IN_USE,
      `Kafka ports already in use on 127.0.0.1: ${busy.join(', ')} (another broker? "ocdn kafka status", or choose --port)`,
    );

  await mkdir(join(dir, 'data'), { recursive: true });
  const props = join(dir, 'server.properties');
  const log4j = join(dir, 'log4j.properties');
  await writeFile(props, serverProperties(dir, port, controllerPort, opts.advertisedPort));
  await writeFile(log4j, LOG4J);
  const cp = `${libs}/*`;
  const common = ['-cp', cp, `-Dlog4j.configuration=file:${log4j}`, '-Djava.awt.headless=true'];

  if (!existsSync(join(dir, 'data', 'meta.properties'))) {
    progress(`formatting KRaft storage in ${join(dir, 'data')}`);
    const id = await clusterId(dir);
    const r = await runJava(java, ['-Xmx256m', ...common, 'kafka.tools.StorageTool', 'format', `--cluster-id=${id}`, '-c', props, '--ignore-formatted'], dir);
    if (r.code !== 0)
      throw new OcdnError(ErrorCodes.INTERNAL, `Kafka storage format failed (exit ${r.code}):\n${r.output.trim().split('\n').slice(-8).join('\n')}`);
  }

  const heap = opts.heapMb ?? 512;
  const logFile = opts.output === 'inherit' ? undefined : join(dir, 'server.log');
  const fd = logFile ? openSync(logFile, 'a') : undefined;
  let child: ChildProcess;
  try {
    child = spawn(
      java,
      [
        `-Xmx${heap}m`,
        `-Xms${heap}m`,
        '-XX:+UseG1GC',
        '-XX:MaxGCPauseMillis=20',
        '-XX:InitiatingHeapOccupancyPercent=35',
        '-XX:+ExplicitGCInvokesConcurrent',
        ...common,
        'kafka.Kafka',
        props,
      ],
      { cwd: dir, stdio: fd === undefined ? ['ignore', 'inherit', 'inherit'] : ['ignore', fd, fd] },
    );
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
  const pid = child.pid;
  if (pid === undefined) throw new OcdnError(ErrorCodes.INTERNAL, 'could not start the Kafka JVM');
  await writeFile(join(dir, 'broker.pid'), `${pid}\n`);
  let exitCode: number | null | undefined;
  const exited = new Promise<number | null>((res) =>
    child.once('exit', (code, sig) => {
      exitCode = code ?? (sig ? 128 : null);
      res(exitCode);
    }),
  );
  // A test runner or CLI that dies must not leave a JVM holding the ports.
  const killOnExit = () => {
    if (exitCode === undefined) child.kill('SIGKILL');
  };
  process.once('exit', killOnExit);
  void exited.then(() => process.off('exit', killOnExit));

  // Clients reach the broker where it is advertised (through the proxy, when there is one).
  const brokers = `127.0.0.1:${opts.advertisedPort ?? port}`;
  const handle: KafkaHandle = {
    brokers,
    port,
    controllerPort,
    dir,
    pid,
    logFile,
    exited,
    async stop(graceMs = 30_000) {
      if (exitCode !== undefined) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
      await rm(join(dir, 'broker.pid'), { force: true });
    },
  };

  progress(`starting Kafka ${KAFKA_VERSION} (pid ${pid}) on ${brokers}, controller on 127.0.0.1:${controllerPort}`);
  const readyMs = opts.readyTimeoutMs ?? 180_000;
  try {
    await waitFor(
      async () => {
        if (exitCode !== undefined)
          throw new OcdnError(
            ErrorCodes.BROKER_UNAVAILABLE,
            `Kafka exited with code ${exitCode} during start-up${logFile ? `; last lines of ${logFile}:\n${tailOf(logFile)}` : ''}`,
          );
        return brokerAnswers(brokers);
      },
      {
        timeoutMs: readyMs,
        intervalMs: 300,
        fatal: (err) => isOcdnError(err),
        timeoutError: () =>
          new OcdnError(ErrorCodes.BROKER_UNAVAILABLE, `Kafka did not answer on ${brokers} within ${readyMs} ms${logFile ? ` (log: ${logFile})` : ''}`),
      },
    );
    // kafkajs loads when a broker is up, as in the probes below: `ocdn --help` needs none of it.
    const { ensureTopics } = await import('../telemetry/kafka.ts');
    await ensureTopics(brokers, { topics: opts.topics ?? topicNames(), eventPartitions: opts.eventPartitions, log });
  } catch (err) {
    await handle.stop(5_000);
    throw err;
  }
  progress(`Kafka ready on ${brokers}`);
  return handle;
}

/** True when a kafkajs admin can connect and list topics. */
export async function brokerAnswers(brokers: string): Promise<boolean> {
  const { Kafka, logLevel } = await import('kafkajs');
  const admin = new Kafka({
    clientId: 'ocdn-kafka-probe',
    brokers: brokers.split(','),
    logLevel: logLevel.NOTHING,
    retry: { retries: 0 },
    connectionTimeout: 1_000,
  }).admin();
  try {
    await admin.connect();
    await admin.listTopics();
    return true;
  } catch {
    return false;
  } finally {
    await admin.disconnect().catch(() => undefined);
  }
}

export interface KafkaStatus {
  brokers: string;
  reachable: boolean;
  pid?: number;
  alive?: boolean;
  topics?: { name: string; partitions: number }[];
  error?: string;
}

function readPid(file: string): number | undefined {
  try {
    const n = Number(readFileSync(file, 'utf8').trim());
    return Number.isInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

export async function kafkaStatus(brokers: string, dir?: string): Promise<KafkaStatus> {
  const out: KafkaStatus = { brokers, reachable: false };
  if (dir) {
    const pid = readPid(join(resolve(dir), 'kafka.pid')) ?? readPid(join(resolve(dir), 'broker.pid'));
    if (pid) {
      out.pid = pid;
      out.alive = isAlive(pid);
    }
  }
  const { Kafka, logLevel } = await import('kafkajs');
  const admin = new Kafka({
    clientId: 'ocdn-kafka-status',
    brokers: brokers.split(','),
    logLevel: logLevel.NOTHING,
    retry: { retries: 0 },
    connectionTimeout: 1_000,
  }).admin();
  try {
    await admin.connect();
    const names = (await admin.listTopics()).filter((t) => !t.startsWith('__'));
    const meta = names.length ? await admin.fetchTopicMetadata({ topics: names }) : { topics: [] };
    out.reachable = true;
    out.topics = meta.topics.map((t) => ({ name: t.name, partitions: t.partitions.length })).sort((a, b) => a.name.localeCompare(b.name));
  } catch (err) {
    out.error = (err as Error).message;
  } finally {
    await admin.disconnect().catch(() => undefined);
  }
  return out;
}

/**
 * `ocdn kafka up`: runs `ocdn kafka run` detached (its own process group, log in `<dir>/kafka.log`,
 * pid in `<dir>/kafka.pid`) and returns once the broker is ready with its topics.
 */
export async function kafkaUpDetached(opts: { dir: string; port: number; readyTimeoutMs?: number; onProgress?: (line: string) => void }): Promise<KafkaStatus> {
  const dir = resolve(opts.dir);
  const brokers = `127.0.0.1:${opts.port}`;
  const pidFile = join(dir, 'kafka.pid');
  const old = readPid(pidFile);
  if (old && isAlive(old)) {
    if (await brokerAnswers(brokers)) {
      opts.onProgress?.(`Kafka already running (pid ${old}) on ${brokers}`);
      return kafkaStatus(brokers, dir);
    }
    throw new OcdnError(
      ErrorCodes.USAGE,
      `a Kafka process (pid ${old}) from ${dir} is running but does not answer on ${brokers}; "ocdn kafka down --dir ${opts.dir}" first`,
    );
  }
  // Fetch in the foreground so the user sees progress and a missing Maven/Java fails here.
  findJava();
  await fetchKafkaLibs({ log: opts.onProgress });
  await mkdir(dir, { recursive: true });
  const logFile = join(dir, 'kafka.log');
  const fd = openSync(logFile, 'a');
  let pid: number | undefined;
  try {
    const child = spawn(process.execPath, [join(REPO_ROOT, 'bin', 'ocdn.js'), 'kafka', 'run', '--dir', dir, '--port', String(opts.port)], {
      detached: true,
      stdio: ['ignore', fd, fd],
      env: process.env,
    });
    child.unref();
    pid = child.pid;
  } finally {
    closeSync(fd);
  }
  if (!pid) throw new OcdnError(ErrorCodes.INTERNAL, 'could not start "ocdn kafka run"');
  await writeFile(pidFile, `${pid}\n`);
  opts.onProgress?.(`started Kafka runner (pid ${pid}); log: ${logFile}`);
  const readyMs = opts.readyTimeoutMs ?? 300_000;
  return waitFor(
    async () => {
      const st = await kafkaStatus(brokers, dir);
      if (st.reachable && st.topics?.some((t) => t.name === topicNames().events)) return st;
      if (!isAlive(pid))
        throw new OcdnError(ErrorCodes.BROKER_UNAVAILABLE, `Kafka runner exited during start-up; last lines of ${logFile}:\n${tailOf(logFile)}`);
      return undefined;
    },
    {
      timeoutMs: readyMs,
      intervalMs: 500,
      fatal: (err) => isOcdnError(err),
      timeoutError: () => new OcdnError(ErrorCodes.BROKER_UNAVAILABLE, `Kafka not ready on ${brokers} after ${readyMs} ms (log: ${logFile})`),
    },
  );
}

/** `ocdn kafka down`: SIGTERM the runner's process group (JVM included), SIGKILL after 30 s. */
export async function kafkaDown(dirArg: string, onProgress?: (line: string) => void): Promise<boolean> {
  const dir = resolve(dirArg);
  const pidFile = join(dir, 'kafka.pid');
  const pid = readPid(pidFile);
  if (!pid || !isAlive(pid)) {
    await rm(pidFile, { force: true });
    onProgress?.(`no Kafka running from ${dir}`);
    return false;
  }
  onProgress?.(`stopping Kafka (pid ${pid})`);
  if (await stopProcess(pid, 30_000)) onProgress?.('Kafka did not stop within 30 s; killed it');
  // The JVM may outlive the runner by a moment when it was signalled directly.
  const jvm = readPid(join(dir, 'broker.pid'));
  if (jvm && isAlive(jvm)) {
    await waitFor(() => !isAlive(jvm), { timeoutMs: 30_000, intervalMs: 100 }).catch(() => process.kill(jvm, 'SIGKILL'));
  }
  await rm(pidFile, { force: true });
  await rm(join(dir, 'broker.pid'), { force: true });
  return true;
}

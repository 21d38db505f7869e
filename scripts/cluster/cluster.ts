import { randomBytes } from 'node:crypto';
import { join, resolve } from 'node:path';
import { clusterPorts } from '../../common/cluster-context.ts';
import { ErrorCodes, OcdnError } from '../../common/errors.ts';
import { waitFor } from '../../common/http.ts';
import { parseBytes } from '../../common/units.ts';
import { isAlive, portInUse } from '../../common/ports.ts';
import { mintLoginUrl } from '../../console/login-client.ts';
import { componentEnv, spawnOcdn, stopProcess } from './processes.ts';
import { readState, removeState, writeState, type ClusterState, type ComponentState } from './state.ts';
import { type ClusterOptions, defaultClusterOptions } from './options.ts';

export async function healthy(url: string): Promise<boolean> {
  try {
    const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(1_000) });
    await res.arrayBuffer();
    return res.ok;
  } catch {
    return false;
  }
}

/** True when an S3 server answers at `endpoint`: any S3 answers `GET /` in XML, even when it refuses. */
export async function s3Answers(endpoint: string): Promise<boolean> {
  try {
    const res = await fetch(endpoint, { signal: AbortSignal.timeout(1_000) });
    const body = await res.text();
    return /xml/.test(res.headers.get('content-type') ?? '') || body.trimStart().startsWith('<?xml');
  } catch {
    return false;
  }
}

/** Refuses to start over a running cluster; clears what a crashed one left behind. */
async function checkNotRunning(dir: string, say: (s: string) => void): Promise<void> {
  const prev = await readState(dir);
  if (!prev) return;
  const alive = prev.components.filter((c) => !c.external && isAlive(c.pid));
  if (alive.length > 0) {
    throw new OcdnError(
      ErrorCodes.USAGE,
      `a cluster is already running from ${dir} (${alive.map((c) => `${c.name}:${c.pid}`).join(', ')}); run "ocdn cluster down --dir ${dir}" first`,
    );
  }
  say(`cleaning up state left by a stopped cluster (${prev.components.length} stale pids)`);
  await removeState(dir);
}

export async function clusterUp(partial: Partial<ClusterOptions> = {}): Promise<ClusterState> {
  const o: ClusterOptions = { ...defaultClusterOptions, ...partial };
  const dir = resolve(o.dir);
  const say = o.onProgress ?? (() => {});
  if (o.edges < 1) throw new OcdnError(ErrorCodes.CONFIG, '--edges must be at least 1');
  if (o.regions.length === 0) throw new OcdnError(ErrorCodes.CONFIG, '--regions needs at least one region');
  await checkNotRunning(dir, say);

  const embeddedS3 = o.s3 === 'embedded';
  const localKafka = o.kafka === 'local';
  const ports = clusterPorts(o.basePort);
  if (o.edges > 89) throw new OcdnError(ErrorCodes.CONFIG, '--edges must be at most 89 (the shield takes base port + 90)');
  const wanted = [ports.steering, ports.aggregator, ...Array.from({ length: o.edges }, (_, i) => ports.edge(i))];
  if (o.shield) wanted.push(ports.shield);
  if (embeddedS3) wanted.push(ports.s3);
  if (o.console) wanted.push(ports.console);
  if (o.fill) wanted.push(ports.fill);
  if (localKafka) wanted.push(o.kafkaPort, o.kafkaPort + 1);
  const busy: number[] = [];
  for (const p of wanted) if (await portInUse(p)) busy.push(p);
  if (busy.length > 0) {
    throw new OcdnError(
      ErrorCodes.PORT_IN_USE,
      `ports already in use on 127.0.0.1: ${busy.join(', ')} (another cluster or program? try --base-port, or "ocdn cluster down")`,
    );
  }

  const state: ClusterState = {
    version: 1,
    startedAt: new Date().toISOString(),
    dir,
    tokenSecret: randomBytes(24).toString('hex'),
    adminToken: randomBytes(16).toString('hex'),
    edgeKey: randomBytes(32).toString('hex'),
    s3Endpoint: embeddedS3 ? `http://127.0.0.1:${ports.s3}` : o.s3,
    bucket: o.bucket,
    brokers: localKafka ? `127.0.0.1:${o.kafkaPort}` : o.kafka,
    steeringUrl: `http://127.0.0.1:${ports.steering}`,
    aggregatorUrl: `http://127.0.0.1:${ports.aggregator}`,
    components: [],
  };
  const logs = join(dir, 'logs');
  const s3Flags = ['--s3-endpoint', state.s3Endpoint, '--bucket', state.bucket];
  const add = async (c: ComponentState) => {
    state.components.push(c);
    await writeState(state); // written after each start so "down" can clean up a half-started cluster
  };

  try {
    if (embeddedS3) {
      say(`starting S3 origin on ${state.s3Endpoint}`);
      const args = ['origin', 'serve', '--port', String(ports.s3), '--dir', join(dir, 's3'), '--bucket', state.bucket];
      const p = await spawnOcdn(args, join(logs, 's3.log'));
      await add({ name: 's3', kind: 's3', pid: p.pid, port: ports.s3, url: state.s3Endpoint, log: p.log, args });
      await waitFor(
        () => {
          if (!isAlive(p.pid)) throw new OcdnError(ErrorCodes.INTERNAL, `the S3 origin exited during start-up (log: ${p.log})`);
          return s3Answers(state.s3Endpoint);
        },
        { timeoutMs: o.readyTimeoutMs, what: `S3 at ${state.s3Endpoint}` },
      );
    } else {
      await add({ name: 's3', kind: 's3', pid: 0, port: Number(new URL(o.s3).port || 443), url: o.s3, log: '', external: true });
    }

    if (localKafka) {
      say(`starting Kafka (KRaft) on ${state.brokers}`);
      await startKafkaComponent(state, dir, o, logs, add);
    } else {
      await add({ name: 'kafka', kind: 'kafka', pid: 0, port: 0, url: o.kafka, log: '', external: true });
    }

    // Steering's decisions and the edges' access records feed the aggregator's miss classification.
    // Not the shield's: it serves edges, not players, and its bytes are already in the edges' records.
    const recordFlags = [
      '--brokers',
      state.brokers,
      '--spill-dir',
      join(dir, 'spill'),
      ...(o.telemetryNamespace ? ['--topic-prefix', `${o.telemetryNamespace}.`] : []),
    ];
    say(`starting steering on ${state.steeringUrl}`);
    const stArgs = [
      'steering',
      'serve',
      '--port',
      String(ports.steering),
      '--policy',
      o.policy,
      '--aggregator',
      state.aggregatorUrl,
      ...recordFlags,
      ...s3Flags,
    ];
    const st = await spawnOcdn(stArgs, join(logs, 'steering.log'), componentEnv(state, 'steering'));
    await add({ name: 'steering', kind: 'steering', pid: st.pid, port: ports.steering, url: state.steeringUrl, log: st.log, args: stArgs });
    await waitFor(() => healthy(state.steeringUrl), { timeoutMs: o.readyTimeoutMs, what: 'steering /healthz' });

    // The shield holds what any edge fetched, so S3 sees one GET per object for the whole
    // cluster; it is a parent, not a place players are steered to (no --steering).
    let parentFlags: string[] = s3Flags;
    if (o.shield) {
      const url = `http://127.0.0.1:${ports.shield}`;
      const region = o.regions[0]!;
      say(`starting shield-1 (${region}) on ${url}`);
      const args = [
        'edge',
        'serve',
        '--id',
        'shield-1',
        '--port',
        String(ports.shield),
        '--region',
        region,
        '--capacity',
        shieldCapacity(o.capacity, o.edges),
        ...s3Flags,
      ];
      const p = await spawnOcdn(args, join(logs, 'shield-1.log'), componentEnv(state, 'shield'));
      await add({ name: 'shield-1', kind: 'shield', pid: p.pid, port: ports.shield, url, log: p.log, region, args });
      await waitFor(() => healthy(url), { timeoutMs: o.readyTimeoutMs, what: `shield-1 /healthz (log: ${p.log})` });
      parentFlags = ['--parent', url];
    }

    for (let i = 0; i < o.edges; i++) {
      const id = `edge-${i + 1}`;
      const region = o.regions[i % o.regions.length]!;
      const url = `http://127.0.0.1:${ports.edge(i)}`;
      say(`starting ${id} (${region}) on ${url}`);
      const args = [
        'edge',
        'serve',
        '--id',
        id,
        '--port',
        String(ports.edge(i)),
        '--region',
        region,
        '--capacity',
        o.capacity,
        '--policy',
        o.cachePolicy,
        '--steering',
        state.steeringUrl,
        ...recordFlags,
        ...parentFlags,
        ...(o.fillRateCap ? ['--fill-rate-cap', o.fillRateCap] : []),
        ...(o.diskCapacity ? ['--disk-dir', join(state.dir, 'disk', id), '--disk-capacity', o.diskCapacity] : []),
      ];
      const p = await spawnOcdn(args, join(logs, `${id}.log`), componentEnv(state, 'edge'));
      await add({ name: id, kind: 'edge', pid: p.pid, port: ports.edge(i), url, log: p.log, region, args });
    }

    say(`starting aggregator on ${state.aggregatorUrl}`);
    const agArgs = ['telemetry', 'aggregate', '--brokers', state.brokers, '--port', String(ports.aggregator)];
    if (o.telemetryNamespace) agArgs.push('--topic-prefix', `${o.telemetryNamespace}.`, '--group', `${o.telemetryNamespace}-aggregator`);
    const ag = await spawnOcdn(agArgs, join(logs, 'aggregator.log'));
    await add({ name: 'aggregator', kind: 'aggregator', pid: ag.pid, port: ports.aggregator, url: state.aggregatorUrl, log: ag.log, args: agArgs });

    for (const c of state.components.filter((x) => x.kind === 'edge' || x.kind === 'aggregator')) {
      await waitFor(() => healthy(c.url), { timeoutMs: o.readyTimeoutMs, what: `${c.name} /healthz (log: ${c.log})` });
    }
    await waitFor(
      async () => {
        const res = await fetch(`${state.steeringUrl}/v1/edges`, { signal: AbortSignal.timeout(1_000) });
        const body = (await res.json()) as { edges?: { id: string; healthy?: boolean; state?: string }[] } | { id: string }[];
        const list = Array.isArray(body) ? body : (body.edges ?? []);
        return list.length >= o.edges;
      },
      { timeoutMs: o.readyTimeoutMs, what: `all ${o.edges} edges registered with steering` },
    );
    if (o.fill) {
      const url = `http://127.0.0.1:${ports.fill}`;
      say(`starting the fill controller on ${url} (a cycle every ${o.fill.every}, window ${o.fill.window}, budget ${o.fill.budget})`);
      // Endpoints and the admin token come from cluster.json (--dir), never from argv.
      const args = [
        'fill',
        'run',
        '--every',
        o.fill.every,
        '--port',
        String(ports.fill),
        '--window',
        o.fill.window,
        '--budget',
        o.fill.budget,
        '--copies',
        o.fill.copies,
        '--top',
        String(o.fill.top),
        '--dir',
        dir,
      ];
      const p = await spawnOcdn(args, join(logs, 'fill.log'), componentEnv(state, 'fill'));
      await add({ name: 'fill', kind: 'fill', pid: p.pid, port: ports.fill, url, log: p.log, args });
      await waitFor(() => healthy(url), { timeoutMs: o.readyTimeoutMs, what: `fill controller /healthz (log: ${p.log})` });
    }
    if (o.console) {
      const url = `http://127.0.0.1:${ports.console}`;
      say(`starting the console on ${url}`);
      const args = ['console', 'serve', '--port', String(ports.console), '--dir', dir, '--steering', state.steeringUrl, '--aggregator', state.aggregatorUrl];
      const p = await spawnOcdn(args, join(logs, 'console.log'), componentEnv(state, 'console'));
      await add({ name: 'console', kind: 'console', pid: p.pid, port: ports.console, url, log: p.log, args });
      await waitFor(
        () => {
          if (!isAlive(p.pid)) throw new OcdnError(ErrorCodes.INTERNAL, `the console exited during start-up (log: ${p.log})`);
          return healthy(url);
        },
        { timeoutMs: o.readyTimeoutMs, what: `console /healthz (log: ${p.log})`, fatal: (err) => err instanceof OcdnError },
      );
    }
    let up = state;
    if (o.supervise) {
      say('starting the supervisor (restarts what crashes)');
      await startSupervisor(state, logs, add, o.readyTimeoutMs);
      // From here the supervisor writes cluster.json too: hand back what is on disk.
      up = (await readState(dir)) ?? state;
    }
    await withLoginUrl(up);
    return up;
  } catch (err) {
    say(`start-up failed, stopping what was started: ${(err as Error).message}`);
    await clusterDown(dir).catch(() => undefined);
    throw err;
  }
}

/**
 * A fresh one-time login URL on the console's entry, for printing (never written to cluster.json:
 * it works once, and the file outlives that).
 */
async function withLoginUrl(state: ClusterState): Promise<void> {
  const c = state.components.find((x) => x.kind === 'console');
  if (!c) return;
  try {
    c.loginUrl = (await mintLoginUrl(c.url, state.adminToken)).url;
  } catch {
    // A console that does not answer shows its plain URL; "cluster status" says it is down.
  }
}

/** `ocdn cluster supervise --dir D`, detached like every component, and ready once its /healthz answers. */
async function startSupervisor(state: ClusterState, logs: string, add: (c: ComponentState) => Promise<void>, timeoutMs: number): Promise<void> {
  const args = ['cluster', 'supervise', '--dir', state.dir];
  const p = await spawnOcdn(args, join(logs, 'supervisor.log'));
  await add({ name: 'supervisor', kind: 'supervisor', pid: p.pid, port: 0, url: '', log: p.log, args });
  await waitFor(
    async () => {
      if (!isAlive(p.pid)) throw new OcdnError(ErrorCodes.INTERNAL, `the supervisor exited during start-up (log: ${p.log})`);
      const me = (await readState(state.dir))?.components.find((c) => c.kind === 'supervisor');
      return !!me?.url && (await healthy(me.url));
    },
    { timeoutMs, what: `supervisor /healthz (log: ${p.log})`, fatal: (err) => err instanceof OcdnError },
  );
}

/** The shield holds the working set of all edges: their capacities added up. */
function shieldCapacity(edgeCapacity: string, edges: number): string {
  const bytes = parseBytes(edgeCapacity);
  return String(bytes * Math.max(1, edges));
}

async function startKafkaComponent(
  state: ClusterState,
  dir: string,
  o: ClusterOptions,
  logs: string,
  add: (c: ComponentState) => Promise<void>,
): Promise<void> {
  const args = ['kafka', 'run', '--dir', join(dir, 'kafka'), '--port', String(o.kafkaPort)];
  const p = await spawnOcdn(args, join(logs, 'kafka.log'));
  await add({ name: 'kafka', kind: 'kafka', pid: p.pid, port: o.kafkaPort, url: state.brokers, log: p.log, args });
  await waitFor(() => kafkaReady(state.brokers), {
    timeoutMs: Math.max(o.readyTimeoutMs, 300_000),
    intervalMs: 500,
    what: `Kafka at ${state.brokers} (log: ${p.log})`,
  });
}

export async function kafkaReady(brokers: string): Promise<boolean> {
  const { Kafka, logLevel } = await import('kafkajs');
  const admin = new Kafka({ clientId: 'ocdn-cluster', brokers: brokers.split(','), logLevel: logLevel.NOTHING, retry: { retries: 0 } }).admin();
  try {
    await admin.connect();
    const topics = await admin.listTopics();
    return topics.includes('ocdn.qoe.events.v1');
  } catch {
    return false;
  } finally {
    await admin.disconnect().catch(() => undefined);
  }
}

export interface ComponentStatus extends ComponentState {
  restarts: number;
  alive: boolean;
  healthy: boolean;
}

export async function clusterStatus(dirArg: string): Promise<{ state: ClusterState; components: ComponentStatus[] } | undefined> {
  const state = await readState(resolve(dirArg));
  if (!state) return undefined;
  const components = await Promise.all(
    state.components.map(async (c): Promise<ComponentStatus> => {
      const alive = c.external ? true : isAlive(c.pid);
      let ok = false;
      if (c.kind === 's3') ok = await s3Answers(c.url);
      else if (c.kind === 'kafka') ok = await kafkaReady(c.url);
      else ok = alive && (await healthy(c.url));
      const status: ComponentStatus = { ...c, restarts: c.restarts ?? 0, alive, healthy: ok };
      if (c.kind === 'console' && ok) await withLoginUrl({ ...state, components: [status] });
      return status;
    }),
  );
  return { state, components };
}

/** Stops every component we started, newest first, and removes the state file. */
export async function clusterDown(dirArg: string, onProgress: (line: string) => void = () => {}): Promise<{ stopped: string[]; killed: string[] }> {
  const dir = resolve(dirArg);
  const state = await readState(dir);
  const stopped: string[] = [];
  const killed: string[] = [];
  if (!state) return { stopped, killed };
  // The supervisor first, so it does not start again what is being stopped; then what it may
  // have restarted meanwhile is in the file, read again.
  for (const c of state.components.filter((x) => x.kind === 'supervisor' && x.pid > 0 && isAlive(x.pid))) {
    onProgress(`stopping ${c.name} (pid ${c.pid})`);
    const hard = await stopProcess(c.pid, 10_000);
    (hard ? killed : stopped).push(c.name);
  }
  const now = (await readState(dir)) ?? state;
  // Players and edges first so nothing new reaches steering/telemetry, Kafka after the aggregator
  // so it can commit its offsets, S3 last.
  const order: ComponentState['kind'][] = ['players', 'fill', 'console', 'edge', 'shield', 'steering', 'aggregator', 'kafka', 's3'];
  for (const kind of order) {
    const group = now.components.filter((c) => c.kind === kind && !c.external && c.pid > 0);
    await Promise.all(
      group.map(async (c) => {
        if (!isAlive(c.pid)) return;
        onProgress(`stopping ${c.name} (pid ${c.pid})`);
        const hard = await stopProcess(c.pid, kind === 'kafka' ? 30_000 : 10_000);
        (hard ? killed : stopped).push(c.name);
      }),
    );
  }
  await removeState(dir);
  return { stopped, killed };
}

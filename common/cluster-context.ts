import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ErrorCodes, OcdnError } from './errors.ts';

/**
 * The running local cluster, as `cluster up` records it in `<dir>/cluster.json`. Every other
 * command reads it to fill in what the user did not pass (flag > env > context > built-in
 * default), so on one machine no command needs endpoint or secret flags.
 */
export interface ComponentState {
  name: string; // e.g. "s3", "kafka", "steering", "edge-1", "aggregator"
  kind: 's3' | 'kafka' | 'steering' | 'edge' | 'shield' | 'aggregator' | 'console' | 'players' | 'supervisor' | 'fill';
  pid: number;
  port: number;
  url: string;
  log: string;
  /** The `ocdn` arguments it was started with, so chaos can restart it the same way. */
  args?: string[];
  /** Only for edges. */
  region?: string;
  external?: boolean; // given by the user (S3/Kafka URL): never started or stopped by us
  /** Times the supervisor started it again after it died on its own (chaos restarts are not counted). */
  restarts?: number;
  lastRestartAt?: string;
  /**
   * Held down by chaos: the supervisor leaves it dead until `until` (ISO time) passes, or for good
   * without one, until `ocdn chaos restore`.
   */
  held?: { by: string; since: string; until?: string };
  /** Only for the console, and never in cluster.json: a freshly minted one-time login URL, for printing. */
  loginUrl?: string;
}

export interface ClusterState {
  version: 1;
  startedAt: string;
  dir: string;
  tokenSecret: string;
  adminToken: string;
  /** Per-cluster key that signs edge heartbeats (absent in state files of older clusters). */
  edgeKey?: string;
  s3Endpoint: string;
  bucket: string;
  brokers: string;
  steeringUrl: string;
  aggregatorUrl: string;
  components: ComponentState[];
}

/** The cluster's port layout, one place for `cluster up` and every command's built-in default. */
export const DEFAULT_BASE_PORT = 8400;
export const DEFAULT_KAFKA_PORT = 9092;
export function clusterPorts(base = DEFAULT_BASE_PORT) {
  return {
    steering: base,
    edge: (i: number) => base + 1 + i,
    shield: base + 90,
    aggregator: base + 100,
    fill: base + 110,
    s3: base + 169,
    console: base + 200,
  };
}
export const DEFAULT_PORTS = clusterPorts();

export const DEFAULT_DIR = '.ocdn';
export const stateFile = (dir: string) => join(dir, 'cluster.json');

/** Where the context lives: `--dir`, else OCDN_DIR, else ./.ocdn; always absolute. */
export function contextDir(dirFlag?: unknown, env: NodeJS.ProcessEnv = process.env): string {
  if (typeof dirFlag === 'string' && dirFlag.trim() !== '') return resolve(dirFlag);
  if (env.OCDN_DIR && env.OCDN_DIR.trim() !== '') return resolve(env.OCDN_DIR);
  return resolve(DEFAULT_DIR);
}

/** cluster.json of `dir`, or undefined when there is none; a file that is there but unreadable is an error. */
export function readStateSync(dir: string): ClusterState | undefined {
  let text: string;
  try {
    text = readFileSync(stateFile(dir), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new OcdnError(ErrorCodes.CONFIG, `cannot read ${stateFile(dir)}: ${(err as Error).message}`);
  }
  try {
    return JSON.parse(text) as ClusterState;
  } catch (err) {
    throw new OcdnError(ErrorCodes.CONFIG, `${stateFile(dir)} is not valid JSON (${(err as Error).message}); remove it if no cluster runs from ${dir}`);
  }
}

/** What a context can fill in: the names a config field refers to with `ctx`. */
export interface ContextValues {
  s3Endpoint: string;
  bucket: string;
  steeringUrl: string;
  brokers: string;
  aggregatorUrl: string;
  tokenSecret: string;
  adminToken: string;
  edgeKey: string;
  /** Steered edges' base URLs, comma-separated. */
  edgeUrls: string;
  kafkaDir: string;
  /** The web console's base URL (absent when the cluster runs none). */
  consoleUrl: string;
}
export type ContextKey = keyof ContextValues;

export interface ClusterContext {
  dir: string;
  /** undefined when no cluster.json is there. */
  state: ClusterState | undefined;
  values: Partial<ContextValues>;
}

export function contextValues(state: ClusterState): Partial<ContextValues> {
  const webConsole = state.components.find((c) => c.kind === 'console');
  return {
    ...(state.edgeKey ? { edgeKey: state.edgeKey } : {}),
    s3Endpoint: state.s3Endpoint,
    bucket: state.bucket,
    steeringUrl: state.steeringUrl,
    brokers: state.brokers,
    aggregatorUrl: state.aggregatorUrl,
    tokenSecret: state.tokenSecret,
    adminToken: state.adminToken,
    edgeUrls: state.components
      .filter((c) => c.kind === 'edge')
      .map((c) => c.url)
      .join(','),
    kafkaDir: join(state.dir, 'kafka'),
    ...(webConsole ? { consoleUrl: webConsole.url } : {}),
  };
}

export function readContext(dirFlag?: unknown, env: NodeJS.ProcessEnv = process.env): ClusterContext {
  const dir = contextDir(dirFlag, env);
  const state = readStateSync(dir);
  return { dir, state, values: state ? contextValues(state) : { kafkaDir: join(dir, 'kafka') } };
}

export const START_HINT = 'start a cluster with "ocdn cluster up --detach"';

/** The cluster itself, for commands that act on a whole cluster (chaos, loadtest, fill, status). */
export function requireCluster(ctx: ClusterContext): ClusterState {
  if (!ctx.state) throw new OcdnError(ErrorCodes.USAGE, `no cluster found: no ${stateFile(ctx.dir)} (${START_HINT}, or pass --dir / OCDN_DIR)`);
  return ctx.state;
}

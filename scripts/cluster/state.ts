import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface ComponentState {
  name: string; // e.g. "s3", "kafka", "steering", "edge-1", "aggregator"
  kind: 's3' | 'kafka' | 'steering' | 'edge' | 'shield' | 'aggregator' | 'players';
  pid: number;
  port: number;
  url: string;
  log: string;
  /** The `ocdn` arguments it was started with, so chaos can restart it the same way. */
  args?: string[];
  /** Only for edges. */
  region?: string;
  external?: boolean; // given by the user (S3/Kafka URL): never started or stopped by us
}

export interface ClusterState {
  version: 1;
  startedAt: string;
  dir: string;
  tokenSecret: string;
  adminToken: string;
  s3Endpoint: string;
  bucket: string;
  brokers: string;
  steeringUrl: string;
  aggregatorUrl: string;
  components: ComponentState[];
}

export const stateFile = (dir: string) => join(dir, 'cluster.json');

export async function readState(dir: string): Promise<ClusterState | undefined> {
  try {
    return JSON.parse(await readFile(stateFile(dir), 'utf8')) as ClusterState;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new Error(`cannot read ${stateFile(dir)}: ${(err as Error).message} (remove it if the cluster is not running)`);
  }
}

export async function writeState(state: ClusterState): Promise<void> {
  await mkdir(state.dir, { recursive: true });
  // The file holds the token and admin secrets of the local cluster.
  await writeFile(stateFile(state.dir), `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
}

export async function removeState(dir: string): Promise<void> {
  await rm(stateFile(dir), { force: true });
}

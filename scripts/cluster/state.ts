import { mkdir, rm, writeFile } from 'node:fs/promises';
import { type ClusterState, readStateSync, stateFile } from '../../common/cluster-context.ts';

export type { ClusterState, ComponentState } from '../../common/cluster-context.ts';
export { stateFile };

export async function readState(dir: string): Promise<ClusterState | undefined> {
  return readStateSync(dir);
}

export async function writeState(state: ClusterState): Promise<void> {
  await mkdir(state.dir, { recursive: true });
  // The file holds the token and admin secrets of the local cluster.
  await writeFile(stateFile(state.dir), `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
}

export async function removeState(dir: string): Promise<void> {
  await rm(stateFile(dir), { force: true });
}

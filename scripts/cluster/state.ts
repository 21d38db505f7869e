import { open, mkdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { type ClusterState, readStateSync, stateFile } from '../../common/cluster-context.ts';
import { ErrorCodes, OcdnError } from '../../common/errors.ts';
import { sleep } from '../../common/retry.ts';

export type { ClusterState, ComponentState } from '../../common/cluster-context.ts';
export { stateFile };

export async function readState(dir: string): Promise<ClusterState | undefined> {
  return readStateSync(dir);
}

/** Whole-file replace (write + rename), so a reader in another process never sees half a file. */
export async function writeState(state: ClusterState): Promise<void> {
  await mkdir(state.dir, { recursive: true });
  const tmp = `${stateFile(state.dir)}.${process.pid}.tmp`;
  // The file holds the cluster's token secret, admin token and edge key: owner only.
  await writeFile(tmp, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
  await rename(tmp, stateFile(state.dir));
}

export async function removeState(dir: string): Promise<void> {
  await rm(stateFile(dir), { force: true });
}

const LOCK_STALE_MS = 10_000;

/**
 * Read-modify-write of cluster.json under a lock file, because the supervisor, chaos and
 * `cluster down` are separate processes that all change it. Resolves undefined when no
 * cluster.json is there (the cluster went down meanwhile); `fn` returning false writes nothing.
 */
export async function updateState<T>(dir: string, fn: (state: ClusterState) => Promise<T | false> | T | false): Promise<T | undefined> {
  const lock = `${stateFile(dir)}.lock`;
  const deadline = Date.now() + 3 * LOCK_STALE_MS;
  for (;;) {
    try {
      await (await open(lock, 'wx', 0o600)).close();
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined; // the dir is gone
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      // A holder that died mid-update leaves its lock behind: take it over once it is old.
      const age = await stat(lock).then(
        (s) => Date.now() - s.mtimeMs,
        () => 0,
      );
      if (age > LOCK_STALE_MS) await rm(lock, { force: true });
      else if (Date.now() > deadline) throw new OcdnError(ErrorCodes.INTERNAL, `${lock} stays locked`);
      else await sleep(10);
    }
  }
  try {
    const state = readStateSync(dir);
    if (!state) return undefined;
    const r = await fn(state);
    if (r === false) return undefined;
    await writeState(state);
    return r;
  } finally {
    await rm(lock, { force: true });
  }
}

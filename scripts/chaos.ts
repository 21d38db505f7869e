import { resolve } from 'node:path';
import { START_HINT } from '../common/cluster-context.ts';
import type { EdgeList } from '../common/contracts.ts';
import { ErrorCodes, OcdnError } from '../common/errors.ts';
import { waitFor } from '../common/http.ts';
import { healthy, kafkaReady, s3Answers } from './cluster/cluster.ts';
import { isAlive } from '../common/ports.ts';
import { spawnOcdn, stopProcess } from './cluster/processes.ts';
import { readState, writeState, type ClusterState, type ComponentState } from './cluster/state.ts';

export type ChaosLog = (line: string) => void;

async function loadRunning(dir: string): Promise<ClusterState> {
  const state = await readState(resolve(dir));
  if (!state) throw new OcdnError(ErrorCodes.USAGE, `no cluster is running from ${dir} (${START_HINT})`);
  return state;
}

function killNow(c: ComponentState): void {
  // SIGKILL, not SIGTERM: chaos is about crashes, with no chance to drain or deregister.
  try {
    process.kill(-c.pid, 'SIGKILL');
  } catch {
    try {
      process.kill(c.pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
}

async function waitReady(c: ComponentState, timeoutMs = 120_000): Promise<void> {
  const check = c.kind === 's3' ? () => s3Answers(c.url) : c.kind === 'kafka' ? () => kafkaReady(c.url) : () => healthy(c.url);
  await waitFor(check, { timeoutMs, intervalMs: 200, what: `${c.name} ready` });
}

/** Starts a component again with the arguments it was first started with and records its new pid. */
async function restart(dir: string, name: string): Promise<ComponentState> {
  const state = await loadRunning(dir);
  const c = state.components.find((x) => x.name === name);
  if (!c?.args) throw new OcdnError(ErrorCodes.USAGE, `${name} cannot be restarted (it was not started by this cluster)`);
  const p = await spawnOcdn(c.args, c.log);
  c.pid = p.pid;
  await writeState(state);
  await waitReady(c);
  return c;
}

export async function killEdge(
  dir: string,
  opts: { id?: string; random?: boolean; restartAfterMs?: number; log: ChaosLog; rand?: () => number },
): Promise<string> {
  const state = await loadRunning(dir);
  const edges = state.components.filter((c) => c.kind === 'edge' && isAlive(c.pid));
  if (edges.length === 0) throw new OcdnError(ErrorCodes.NO_EDGE, 'no running edge to kill');
  const victim = opts.id ? edges.find((e) => e.name === opts.id) : edges[Math.floor((opts.rand ?? Math.random)() * edges.length)];
  if (!victim) throw new OcdnError(ErrorCodes.USAGE, `no running edge "${opts.id}" (running: ${edges.map((e) => e.name).join(', ')})`);
  const t0 = Date.now();
  killNow(victim);
  await waitFor(() => !isAlive(victim.pid), { timeoutMs: 5_000, what: `${victim.name} to die` });
  opts.log(`killed ${victim.name} (pid ${victim.pid}, SIGKILL)`);
  // Report when steering noticed, which is what players feel.
  await waitFor(
    async () => {
      const res = await fetch(`${state.steeringUrl}/v1/edges`, { signal: AbortSignal.timeout(1_000) });
      const e = ((await res.json()) as EdgeList).edges.find((x) => x.id === victim.name);
      return !e || e.healthy === false;
    },
    { timeoutMs: 30_000, intervalMs: 100, what: `steering to mark ${victim.name} out` },
  ).then(
    () => opts.log(`steering marked ${victim.name} out after ${Date.now() - t0} ms`),
    () => opts.log(`steering still lists ${victim.name} as healthy after 30 s`),
  );
  if (opts.restartAfterMs !== undefined) {
    await new Promise((r) => setTimeout(r, opts.restartAfterMs));
    const c = await restart(dir, victim.name);
    opts.log(`restarted ${victim.name} (pid ${c.pid}) after ${Date.now() - t0} ms down`);
  }
  return victim.name;
}

export async function kafkaRestart(dir: string, log: ChaosLog): Promise<void> {
  const state = await loadRunning(dir);
  const k = state.components.find((c) => c.kind === 'kafka');
  if (!k || k.external) throw new OcdnError(ErrorCodes.USAGE, 'Kafka is external to this cluster; restart it where it runs');
  const t0 = Date.now();
  await stopProcess(k.pid, 30_000);
  log(`stopped Kafka (pid ${k.pid}) in ${Date.now() - t0} ms`);
  const c = await restart(dir, k.name);
  log(`Kafka back (pid ${c.pid}) after ${Date.now() - t0} ms; producers replay their spill`);
}

export async function originOutage(dir: string, forMs: number, log: ChaosLog): Promise<void> {
  const state = await loadRunning(dir);
  const s3 = state.components.find((c) => c.kind === 's3');
  if (!s3 || s3.external) throw new OcdnError(ErrorCodes.USAGE, 'the origin is external to this cluster; use --s3 embedded to inject an outage');
  const t0 = Date.now();
  killNow(s3);
  await waitFor(() => !isAlive(s3.pid), { timeoutMs: 5_000, what: 'S3 to stop' });
  log(`origin down (killed pid ${s3.pid}) for ${forMs / 1000} s; edges serve what they hold, stale if expired`);
  await new Promise((r) => setTimeout(r, forMs));
  const c = await restart(dir, s3.name);
  log(`origin back (pid ${c.pid}) after ${Date.now() - t0} ms`);
}

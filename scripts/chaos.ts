import { resolve } from 'node:path';
import { START_HINT } from '../common/cluster-context.ts';
import type { EdgeList } from '../common/contracts.ts';
import { ErrorCodes, OcdnError } from '../common/errors.ts';
import { waitFor } from '../common/http.ts';
import { healthy, kafkaReady, s3Answers } from './cluster/cluster.ts';
import { isAlive } from '../common/ports.ts';
import { respawn, stopProcess } from './cluster/processes.ts';
import { readState, updateState, type ClusterState, type ComponentState } from './cluster/state.ts';
import { sleep } from '../common/retry.ts';

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

const find = (state: ClusterState, name: string): ComponentState => {
  const c = state.components.find((x) => x.name === name);
  if (!c) throw new OcdnError(ErrorCodes.USAGE, `no component "${name}" in this cluster (${state.components.map((x) => x.name).join(', ')})`);
  return c;
};

const supervisorRuns = (state: ClusterState) => state.components.some((c) => c.kind === 'supervisor' && isAlive(c.pid));

/**
 * Marks `name` as held down by chaos, so the supervisor leaves it dead: until `untilMs` (epoch ms),
 * or, without it, until `ocdn chaos restore`. Set before the kill, so no restart slips in between.
 */
async function hold(dir: string, name: string, untilMs?: number): Promise<void> {
  await updateState(resolve(dir), (state) => {
    const c = find(state, name);
    c.held = { by: 'chaos', since: c.held?.since ?? new Date().toISOString(), ...(untilMs === undefined ? {} : { until: new Date(untilMs).toISOString() }) };
    return true;
  });
}

/** Starts a held or dead component again here, with the arguments it was first started with, and lifts its hold. */
async function restart(dir: string, name: string): Promise<ComponentState> {
  const c = await updateState(resolve(dir), async (state) => {
    const x = find(state, name);
    if (!x.args) throw new OcdnError(ErrorCodes.USAGE, `${name} cannot be restarted (it was not started by this cluster)`);
    if (!isAlive(x.pid)) x.pid = (await respawn(state, x)).pid;
    delete x.held;
    return { ...x };
  });
  if (!c) throw new OcdnError(ErrorCodes.USAGE, `no cluster is running from ${dir} (${START_HINT})`);
  await waitReady(c);
  return c;
}

/**
 * Brings `name` back when its hold is over. When a supervisor runs, it is the one that starts it
 * (this waits for that); otherwise this process does: one of them, never both.
 */
async function bringBack(dir: string, name: string): Promise<ComponentState> {
  const state = await loadRunning(dir);
  const c = find(state, name);
  const wasAlive = isAlive(c.pid);
  const untilMs = c.held?.until ? Date.parse(c.held.until) : Date.now();
  if (!supervisorRuns(state)) {
    await sleep(Math.max(0, untilMs - Date.now()));
    return restart(dir, name);
  }
  const back = await waitFor(
    async () => {
      const x = (await readState(resolve(dir)))?.components.find((y) => y.name === name);
      return x && !x.held && isAlive(x.pid) && (wasAlive || x.pid !== c.pid) ? x : undefined;
    },
    { timeoutMs: Math.max(0, untilMs - Date.now()) + 60_000, intervalMs: 100, what: `the supervisor to start ${name} again` },
  );
  await waitReady(back);
  return back;
}

/** `ocdn chaos restore NAME`: lifts a chaos hold at once; the component is started again (by the supervisor when one runs). */
export async function restore(dir: string, name: string, log: ChaosLog): Promise<ComponentState> {
  const state = await loadRunning(dir);
  const c = find(state, name);
  if (!c.held && isAlive(c.pid)) {
    log(`${name} is not held (pid ${c.pid} runs)`);
    return c;
  }
  await hold(dir, name, Date.now());
  const back = await bringBack(dir, name);
  log(`restored ${name} (pid ${back.pid})`);
  return back;
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
  await hold(dir, victim.name);
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
    await hold(dir, victim.name, Date.now() + opts.restartAfterMs);
    const c = await bringBack(dir, victim.name);
    opts.log(`restarted ${victim.name} (pid ${c.pid}) after ${Date.now() - t0} ms down`);
  } else {
    opts.log(`${victim.name} stays down until "ocdn chaos restore ${victim.name}"`);
  }
  return victim.name;
}

export async function kafkaRestart(dir: string, log: ChaosLog): Promise<void> {
  const state = await loadRunning(dir);
  const k = state.components.find((c) => c.kind === 'kafka');
  if (!k || k.external) throw new OcdnError(ErrorCodes.USAGE, 'Kafka is external to this cluster; restart it where it runs');
  const t0 = Date.now();
  await hold(dir, k.name);
  await stopProcess(k.pid, 30_000);
  log(`stopped Kafka (pid ${k.pid}) in ${Date.now() - t0} ms`);
  await hold(dir, k.name, Date.now());
  const c = await bringBack(dir, k.name);
  log(`Kafka back (pid ${c.pid}) after ${Date.now() - t0} ms; producers replay their spill`);
}

/** The embedded origin, which chaos may take down. */
async function embeddedOrigin(dir: string): Promise<ComponentState> {
  const state = await loadRunning(dir);
  const s3 = state.components.find((c) => c.kind === 's3');
  if (!s3 || s3.external) throw new OcdnError(ErrorCodes.USAGE, 'the origin is external to this cluster; use --s3 embedded to inject an outage');
  return s3;
}

/** Takes the embedded origin down and holds it down (for `forMs` from its death, else until `restore(dir, "s3")`). */
export async function originDown(dir: string, log: ChaosLog, forMs?: number): Promise<ComponentState> {
  const s3 = await embeddedOrigin(dir);
  await hold(dir, s3.name);
  killNow(s3);
  await waitFor(() => !isAlive(s3.pid), { timeoutMs: 5_000, what: 'S3 to stop' });
  if (forMs !== undefined) await hold(dir, s3.name, Date.now() + forMs);
  log(`origin down (killed pid ${s3.pid})${forMs === undefined ? ` until "ocdn chaos restore ${s3.name}"` : ''}; edges serve what they hold, stale if expired`);
  return s3;
}

export async function originOutage(dir: string, forMs: number, log: ChaosLog): Promise<void> {
  const t0 = Date.now();
  const s3 = await originDown(dir, () => undefined, forMs);
  log(`origin down (killed pid ${s3.pid}) for ${forMs / 1000} s; edges serve what they hold, stale if expired`);
  const c = await bringBack(dir, s3.name);
  log(`origin back (pid ${c.pid}) after ${Date.now() - t0} ms`);
}

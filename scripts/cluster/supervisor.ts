/**
 * The cluster supervisor: a small long-running process (`ocdn cluster supervise --dir D`) that
 * watches the pids in cluster.json and starts again, with backoff, any component that died on
 * its own. A component chaos killed carries a hold in cluster.json and stays down until the
 * hold's time passes or `ocdn chaos restore` lifts it. `cluster down` stops the supervisor first.
 */
import { createServer } from 'node:http';
import { stateFile } from '../../common/cluster-context.ts';
import { ErrorCodes, OcdnError } from '../../common/errors.ts';
import { closeServer, listen, sendError, sendJson } from '../../common/http.ts';
import { createLogger, type Logger } from '../../common/log.ts';
import { isAlive } from '../../common/ports.ts';
import { Backoff, type BackoffOptions, sleep, waitFor } from '../../common/retry.ts';
import { Shutdown } from '../../common/shutdown.ts';
import { respawn, type SpawnedProcess } from './processes.ts';
import { readState, updateState, type ClusterState, type ComponentState } from './state.ts';

export interface SupervisorOptions {
  dir: string;
  /** How often the pids are checked, ms (default 500). */
  intervalMs?: number;
  /** Up this long after a start, a component counts as healthy again: its backoff starts over (default 30 s). */
  stableMs?: number;
  /** After this many deaths in a row each within stableMs of its start, it is a crash loop (default 5). */
  crashLoopAfter?: number;
  /** Delays between a death and the restart (default 500 ms doubling up to 30 s, no jitter: one local process). */
  backoff?: BackoffOptions;
  log?: Logger;
  /** How a component is started again (default: its recorded args, secrets by env). */
  spawn?: (state: ClusterState, c: ComponentState) => Promise<SpawnedProcess>;
}

/** What the supervisor restarts: what this cluster started itself, bar the players (a finite client run) and itself. */
export function supervised(c: ComponentState): boolean {
  return !c.external && c.args !== undefined && c.pid > 0 && c.kind !== 'players' && c.kind !== 'supervisor';
}

interface Watch {
  backoff: Backoff;
  /** When the supervisor last started it (undefined: started by `cluster up`). */
  startedAt?: number;
  /** Deaths in a row, each soon after its start. */
  quickDeaths: number;
  /** When the pending restart is due. */
  retryAt?: number;
  heldLogged?: boolean;
}

export class Supervisor {
  private readonly watches = new Map<string, Watch>();
  private readonly intervalMs: number;
  private readonly stableMs: number;
  private readonly crashLoopAfter: number;
  private readonly backoffOpts: BackoffOptions;
  private readonly log: Logger;
  private readonly spawn: NonNullable<SupervisorOptions['spawn']>;
  lastTickAt = 0;
  restarts = 0;

  constructor(private readonly o: SupervisorOptions) {
    this.intervalMs = o.intervalMs ?? 500;
    this.stableMs = o.stableMs ?? 30_000;
    this.crashLoopAfter = o.crashLoopAfter ?? 5;
    this.backoffOpts = { baseMs: 500, maxMs: 30_000, factor: 2, jitter: false, ...o.backoff };
    this.log = o.log ?? createLogger('supervisor');
    this.spawn = o.spawn ?? respawn;
  }

  get maxDelayMs(): number {
    return this.backoffOpts.maxMs ?? 30_000;
  }

  /** Alive when its loop has run lately. */
  get live(): boolean {
    return Date.now() - this.lastTickAt < Math.max(5_000, 10 * this.intervalMs);
  }

  private watch(name: string): Watch {
    let w = this.watches.get(name);
    if (!w) {
      w = { backoff: new Backoff(this.backoffOpts), quickDeaths: 0 };
      this.watches.set(name, w);
    }
    return w;
  }

  /** One pass over the components; false when the cluster is gone (no cluster.json). */
  async tick(now = Date.now()): Promise<boolean> {
    if (!(await readState(this.o.dir))) return false;
    await updateState(this.o.dir, async (state) => {
      let changed = false;
      for (const c of state.components.filter(supervised)) {
        if (await this.check(state, c, now)) changed = true;
      }
      return changed;
    });
    this.lastTickAt = Date.now();
    return true;
  }

  /** True when `c` changed (and the state must be written). */
  private async check(state: ClusterState, c: ComponentState, now: number): Promise<boolean> {
    const w = this.watch(c.name);
    const holdOver = c.held?.until !== undefined && Date.parse(c.held.until) <= now;
    if (isAlive(c.pid)) {
      w.retryAt = undefined;
      if (w.startedAt !== undefined && now - w.startedAt >= this.stableMs && (w.backoff.failures > 0 || w.quickDeaths > 0)) {
        w.backoff.reset();
        w.quickDeaths = 0;
      }
      if (holdOver) {
        delete c.held;
        return true;
      }
      return false;
    }
    if (c.held && !holdOver) {
      if (!w.heldLogged) this.log.info({ component: c.name, held: c.held }, 'component held down by chaos; not restarting it');
      w.heldLogged = true;
      return false;
    }
    if (c.held) {
      // Chaos asked for it back at this time: a planned restart, not a crash.
      const old = c.pid;
      const p = await this.spawn(state, c);
      c.pid = p.pid;
      delete c.held;
      w.startedAt = now;
      w.heldLogged = false;
      this.log.info({ component: c.name, pid: p.pid, oldPid: old }, 'hold over: component started again');
      return true;
    }
    if (w.retryAt === undefined) {
      const quick = w.startedAt !== undefined && now - w.startedAt < this.stableMs;
      w.quickDeaths = quick ? w.quickDeaths + 1 : 0;
      const looping = w.quickDeaths >= this.crashLoopAfter;
      const delayMs = looping ? this.maxDelayMs : w.backoff.next();
      w.retryAt = now + delayMs;
      if (looping)
        this.log.error(
          { component: c.name, pid: c.pid, quickDeaths: w.quickDeaths, delayMs, log: c.log },
          `crash loop: ${c.name} died ${w.quickDeaths} times in a row within ${this.stableMs} ms of its start; retrying every ${delayMs} ms (see its log)`,
        );
      else this.log.warn({ component: c.name, pid: c.pid, delayMs }, 'component died; restarting it after backoff');
    }
    if (now < w.retryAt) return false;
    const old = c.pid;
    const p = await this.spawn(state, c);
    c.pid = p.pid;
    c.restarts = (c.restarts ?? 0) + 1;
    c.lastRestartAt = new Date(now).toISOString();
    w.startedAt = now;
    w.retryAt = undefined;
    this.restarts++;
    this.log.warn({ component: c.name, pid: p.pid, oldPid: old, restarts: c.restarts }, 'component restarted');
    return true;
  }

  /** Ticks until `signal` aborts or the cluster is gone. */
  async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      try {
        if (!(await this.tick())) {
          this.log.info({ stateFile: stateFile(this.o.dir) }, 'cluster state is gone; supervisor exits');
          return;
        }
      } catch (err) {
        this.log.error({ err: (err as Error).message }, 'supervisor pass failed');
      }
      await sleep(this.intervalMs, signal).catch(() => undefined);
    }
  }
}

/**
 * The `ocdn cluster supervise` process: the loop, plus /healthz on 127.0.0.1 (port 0 = any free
 * one, written into its own cluster.json entry) so `cluster status` sees it like any component.
 */
export async function runSupervisorProcess(o: SupervisorOptions & { port?: number }): Promise<void> {
  const log = o.log ?? createLogger('supervisor');
  const sup = new Supervisor({ ...o, log });
  const server = createServer((req, res) => {
    if (req.url !== '/healthz') return void sendError(res, new OcdnError(ErrorCodes.NOT_FOUND, 'the supervisor answers /healthz only'));
    sendJson(res, sup.live ? 200 : 503, { status: sup.live ? 'ok' : 'stalled', lastTickAt: new Date(sup.lastTickAt).toISOString(), restarts: sup.restarts });
  });
  const port = await listen(server, o.port ?? 0);
  // `cluster up` records this pid right after spawning it: wait for the entry to be there.
  await waitFor(
    () =>
      updateState(o.dir, (state) => {
        const me = state.components.find((c) => c.kind === 'supervisor' && c.pid === process.pid);
        if (!me) return false;
        me.port = port;
        me.url = `http://127.0.0.1:${port}`;
        return true;
      }),
    { timeoutMs: 30_000, intervalMs: 100, what: `this supervisor (pid ${process.pid}) in ${stateFile(o.dir)}` },
  );
  log.info({ port, dir: o.dir }, 'supervisor watching the cluster');
  const stop = new AbortController();
  const shutdown = new Shutdown({ log });
  const loop = sup.run(stop.signal);
  shutdown.add('stop the watch loop', async () => {
    stop.abort();
    await loop;
  });
  shutdown.add('close /healthz', () => closeServer(server, 1_000), 60);
  shutdown.installSignalHandlers();
  await loop;
  if (!shutdown.started) await shutdown.run('cluster gone');
}

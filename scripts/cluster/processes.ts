import { spawn } from 'node:child_process';
import { openSync, closeSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isAlive } from '../../common/ports.ts';
import { waitFor } from '../../common/retry.ts';
import type { ClusterState, ComponentState } from './state.ts';

export const OCDN_BIN = resolve(dirname(fileURLToPath(import.meta.url)), '../../bin/ocdn.js');

export interface SpawnedProcess {
  pid: number;
  log: string;
}

/**
 * Under a test, VITEST would make a component silent; its log file is what explains a failure
 * afterwards, so it keeps warnings and errors (not the access log).
 */
function testLogLevel(): NodeJS.ProcessEnv {
  return process.env.VITEST && !process.env.OCDN_LOG_LEVEL ? { OCDN_LOG_LEVEL: 'warn' } : {};
}

/**
 * Starts `ocdn <args>` as its own process group with stdout+stderr appended to `log`, detached
 * from this process so `cluster up --detach` leaves it running; `stopProcess` ends the group.
 */
export async function spawnOcdn(args: string[], log: string, env: NodeJS.ProcessEnv = {}): Promise<SpawnedProcess> {
  await mkdir(dirname(log), { recursive: true });
  const fd = openSync(log, 'a');
  try {
    const child = spawn(process.execPath, [OCDN_BIN, ...args], {
      detached: true,
      stdio: ['ignore', fd, fd],
      env: { ...process.env, ...testLogLevel(), AWS_SDK_JS_SUPPRESS_NODE_DEPRECATION_WARNING: '1', ...env },
    });
    if (child.pid === undefined) throw new Error(`could not start ocdn ${args.join(' ')}`);
    child.unref();
    return { pid: child.pid, log };
  } finally {
    closeSync(fd);
  }
}

/**
 * The secrets a component gets, by environment only: argv is world-readable (`ps`, /proc/PID/cmdline)
 * while /proc/PID/environ is the owner's. Only the servers that check tokens, sign or verify
 * heartbeats, or guard /admin get them, and the console.
 */
export function componentEnv(state: ClusterState, kind: ComponentState['kind']): NodeJS.ProcessEnv {
  // The console mints login URLs and runs chaos with the admin token; it checks no URL token and signs no heartbeat.
  if (kind === 'console') return { OCDN_ADMIN_TOKEN: state.adminToken };
  if (kind !== 'steering' && kind !== 'edge' && kind !== 'shield') return {};
  return {
    OCDN_TOKEN_SECRET: state.tokenSecret,
    OCDN_ADMIN_TOKEN: state.adminToken,
    ...(state.edgeKey ? { OCDN_EDGE_KEY: state.edgeKey } : {}),
  };
}

/** Starts a component again the way it was first started (its recorded args, its log, its secrets by env). */
export function respawn(state: ClusterState, c: ComponentState): Promise<SpawnedProcess> {
  if (!c.args) throw new Error(`${c.name} was not started by this cluster`);
  return spawnOcdn(c.args, c.log, componentEnv(state, c.kind));
}

/** SIGTERM the process group, wait up to `graceMs`, then SIGKILL. Resolves true when it had to kill. */
export async function stopProcess(pid: number, graceMs = 10_000): Promise<boolean> {
  const signal = (sig: NodeJS.Signals) => {
    try {
      process.kill(-pid, sig);
    } catch {
      try {
        process.kill(pid, sig);
      } catch {
        /* already gone */
      }
    }
  };
  if (!isAlive(pid)) return false;
  signal('SIGTERM');
  const gone = (timeoutMs: number) =>
    waitFor(() => !isAlive(pid), { timeoutMs, intervalMs: 50 }).then(
      () => true,
      () => false,
    );
  if (await gone(graceMs)) return false;
  signal('SIGKILL');
  await gone(2_000);
  return true;
}

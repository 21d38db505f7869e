import { spawn } from 'node:child_process';
import { openSync, closeSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { createServer } from 'node:net';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const OCDN_BIN = resolve(dirname(fileURLToPath(import.meta.url)), '../../bin/ocdn.js');

export interface SpawnedProcess {
  pid: number;
  log: string;
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
      env: { ...process.env, AWS_SDK_JS_SUPPRESS_NODE_DEPRECATION_WARNING: '1', ...env },
    });
    if (child.pid === undefined) throw new Error(`could not start ocdn ${args.join(' ')}`);
    child.unref();
    return { pid: child.pid, log };
  } finally {
    closeSync(fd);
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
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
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline) {
    if (!isAlive(pid)) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  signal('SIGKILL');
  const killDeadline = Date.now() + 2_000;
  while (isAlive(pid) && Date.now() < killDeadline) await new Promise((r) => setTimeout(r, 50));
  return true;
}

/** True when something already listens on host:port. */
export function portInUse(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolvePort) => {
    const srv = createServer();
    srv.once('error', () => resolvePort(true));
    srv.once('listening', () => srv.close(() => resolvePort(false)));
    srv.listen(port, host);
  });
}

/** A free port chosen by the kernel (for tests and for `--base-port 0`). */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolvePort(port));
    });
  });
}

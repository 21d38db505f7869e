/**
 * `ocdn console serve` / `ocdn console url` as processes: where they take peers and the admin
 * token from (flag > env > cluster.json), a clean exit on SIGTERM with a page stream open, and
 * what they say when something is missing.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ClusterState } from '../../common/cluster-context.ts';
import type { ConsoleCluster as ClusterView } from '../../common/contracts.ts';
import { freePort } from '../../common/ports.ts';
import { BIN, ROOT, cliEnv, runCli } from '../cli-run.ts';
import { firstEvent } from './helpers.ts';

const env = () =>
  cliEnv({ logLevel: 'info', unset: ['OCDN_ADMIN_TOKEN', 'OCDN_STEERING_URL', 'OCDN_AGGREGATOR_URL', 'OCDN_CONSOLE_URL', 'OCDN_CONSOLE_PORT'] });

/** Starts `ocdn console serve …` and resolves once it logs where it listens. */
function serve(args: string[], extraEnv: NodeJS.ProcessEnv = {}): Promise<{ child: ChildProcess; url: string; exit: Promise<number | null> }> {
  const child = spawn(process.execPath, [BIN, 'console', 'serve', ...args], { cwd: ROOT, env: { ...env(), ...extraEnv }, stdio: ['ignore', 'pipe', 'pipe'] });
  const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! });
    lines.on('line', (line) => {
      const rec = JSON.parse(line) as { msg?: string; url?: string; steering?: string };
      if (rec.msg === 'console serving') resolve({ child, url: rec.url!, exit });
    });
    void exit.then((code) => reject(new Error(`console exited ${code} before serving: ${stderr}`)));
  });
}

describe('ocdn console', () => {
  let dir: string;
  let down: string;
  const admin = 'a'.repeat(32);

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ocdn-console-cli-'));
    // A cluster context whose peers do not answer: enough to see where values come from.
    down = `http://127.0.0.1:${await freePort()}`;
    const state: Partial<ClusterState> = {
      version: 1,
      dir,
      adminToken: admin,
      tokenSecret: 't'.repeat(32),
      steeringUrl: down,
      aggregatorUrl: down,
      components: [],
    };
    await writeFile(join(dir, 'cluster.json'), JSON.stringify(state), { mode: 0o600 });
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('refuses to start without an admin token, naming where it looked', async () => {
    const r = await runCli(['console', 'serve', '--port', '0'], env());
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/an admin token is required: give --admin-token-file PATH, env OCDN_ADMIN_TOKEN, or run in a cluster/);
  });

  it('takes steering and the admin token from cluster.json, a flag over it; exits 0 on SIGTERM with a page stream open', async () => {
    const port = await freePort();
    const s = await serve(['--dir', dir, '--port', String(port), '--aggregator', down]);
    try {
      expect(s.url).toBe(`http://127.0.0.1:${port}`);
      // The context's admin token mints; the page then sees the context's steering (down here, and it says so).
      const url = await runCli(['console', 'url', '--dir', dir, '--url', s.url], env());
      expect(url.code, url.stderr).toBe(0);
      const login = await fetch(url.stdout.trim(), { redirect: 'manual' });
      const cookie = login.headers.get('set-cookie')!.split(';')[0]!;
      const snap = await firstEvent<ClusterView>(`${s.url}/api/cluster/stream`, 'cluster', { cookie });
      expect(snap.steeringUrl).toBe(down);
      expect(snap.steeringError).toMatch(/ECONNREFUSED/);
      // A stream stays open while the process is asked to stop.
      const ac = new AbortController();
      const open = await fetch(`${s.url}/api/cluster/stream`, { headers: { cookie }, signal: ac.signal });
      expect(open.status).toBe(200);
      const t0 = Date.now();
      s.child.kill('SIGTERM');
      expect(await s.exit).toBe(0);
      expect(Date.now() - t0).toBeLessThan(5_000);
      ac.abort();
    } finally {
      s.child.kill('SIGKILL');
    }
  });

  it('console url says what it tried when no console answers', async () => {
    // Nothing listens on a free port (the default 8600 may be a running cluster's).
    const nobody = `http://127.0.0.1:${await freePort()}`;
    const r = await runCli(['console', 'url', '--dir', dir], { ...env(), OCDN_CONSOLE_URL: nobody });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`cannot reach the console at ${nobody}: ECONNREFUSED (from OCDN_CONSOLE_URL)`);
    const wrong = await serve(['--port', '0'], { OCDN_ADMIN_TOKEN: 'b'.repeat(32) });
    try {
      const r2 = await runCli(['console', 'url', '--dir', dir, '--url', wrong.url], env());
      expect(r2.code).toBe(1);
      expect(r2.stderr).toMatch(/answered 401: E_UNAUTHORIZED/);
    } finally {
      wrong.child.kill('SIGTERM');
      await wrong.exit;
    }
  });
});

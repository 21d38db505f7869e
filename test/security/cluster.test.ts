/**
 * Attacks on a running cluster from the same machine, through the CLI as a user runs it
 * (`cluster up --detach` on free ports, the test run's Kafka): no secret in any process's argv,
 * cluster.json for its owner only, a SIGKILLed steering brought back by the supervisor, and a
 * chaos-killed edge that stays down until it is restored or its --restart-after passes.
 */
import { execFile } from 'node:child_process';
import { readdir, readFile, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { waitFor } from '../../common/http.ts';
import { freePortBlock, isAlive, portInUse } from '../../common/ports.ts';
import { healthy } from '../../scripts/cluster/cluster.ts';
import { readState, stateFile, type ClusterState, type ComponentState } from '../../scripts/cluster/state.ts';
import { cliEnv, runCli } from '../cli-run.ts';

const sh = promisify(execFile);

/** Every process's command line, both as `ps` shows it to any user and as /proc holds it. */
async function allCommandLines(): Promise<string[]> {
  const { stdout } = await sh('ps', ['-eww', '-o', 'args=']);
  const lines = stdout.split('\n');
  for (const pid of (await readdir('/proc')).filter((d) => /^\d+$/.test(d))) {
    const cmd = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    lines.push(cmd.replaceAll('\0', ' '));
  }
  return lines;
}

interface StatusRow extends ComponentState {
  alive: boolean;
  healthy: boolean;
}

describe('cluster trust boundaries (secrets, supervisor, chaos holds)', () => {
  let dir: string;
  let state: ClusterState;
  const env = cliEnv({ unset: ['OCDN_TOKEN_SECRET', 'OCDN_ADMIN_TOKEN', 'OCDN_EDGE_KEY'] });
  const cli = (...args: string[]) => runCli([...args, '--dir', dir], env);
  const status = async (): Promise<StatusRow[]> => JSON.parse((await cli('cluster', 'status', '--json')).stdout) as StatusRow[];
  const comp = async (name: string) => (await readState(dir))!.components.find((c) => c.name === name)!;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ocdn-sec-cluster-'));
    const base = await freePortBlock([0, 1, 2, 100, 169, 200]);
    const up = await cli('cluster', 'up', '--detach', '--edges', '2', '--regions', 'us-east', '--base-port', String(base), '--kafka', inject('kafkaBrokers'));
    expect(up.code, up.stderr).toBe(0);
    state = (await readState(dir))!;
  }, 240_000);

  afterAll(async () => {
    if (dir) await cli('cluster', 'down');
    await rm(dir, { recursive: true, force: true });
  }, 120_000);

  it('no process shows the token secret, admin token or edge key in its argv; steering and edges have them by env', async () => {
    const secrets = { tokenSecret: state.tokenSecret, adminToken: state.adminToken, edgeKey: state.edgeKey! };
    expect(secrets.edgeKey).toMatch(/^[0-9a-f]{64}$/);
    expect(new Set(Object.values(secrets)).size).toBe(3);
    const lines = await allCommandLines();
    // The cluster's processes are in the list (so the scan sees them), and none carries a secret.
    for (const c of state.components.filter((x) => !x.external)) expect(lines.some((l) => l.includes(c.args!.join(' ')))).toBe(true);
    for (const [name, value] of Object.entries(secrets)) expect({ name, leaks: lines.filter((l) => l.includes(value)) }).toEqual({ name, leaks: [] });
    for (const c of state.components.filter((x) => !x.external)) expect(c.args!.join(' ')).not.toMatch(/--token-secret|--admin-token|--edge-key/);
    for (const c of state.components.filter((x) => x.kind === 'steering' || x.kind === 'edge')) {
      const environ = (await readFile(`/proc/${c.pid}/environ`, 'utf8')).split('\0');
      expect(environ).toEqual(
        expect.arrayContaining([`OCDN_TOKEN_SECRET=${secrets.tokenSecret}`, `OCDN_ADMIN_TOKEN=${secrets.adminToken}`, `OCDN_EDGE_KEY=${secrets.edgeKey}`]),
      );
    }
  });

  it('cluster.json is readable by its owner only', async () => {
    expect((await stat(stateFile(dir))).mode & 0o777).toBe(0o600);
  });

  it('the supervisor runs detached, with its /healthz in cluster status', async () => {
    const rows = await status();
    const sup = rows.find((r) => r.kind === 'supervisor')!;
    expect(sup).toMatchObject({ alive: true, healthy: true });
    expect(sup.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(rows.filter((r) => r.kind !== 'supervisor' && !r.external).every((r) => r.restarts === 0 && r.alive && r.healthy)).toBe(true);
  });

  it('a SIGKILLed steering is restarted by the supervisor: new pid, /healthz ok, restarts=1', async () => {
    const before = await comp('steering');
    process.kill(before.pid, 'SIGKILL');
    const after = await waitFor(
      async () => {
        const c = await comp('steering');
        return c.pid !== before.pid && isAlive(c.pid) && (await healthy(c.url)) ? c : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 200, what: 'steering restarted by the supervisor' },
    );
    expect(after.restarts).toBe(1);
    const row = (await status()).find((r) => r.name === 'steering')!;
    expect(row).toMatchObject({ pid: after.pid, restarts: 1, alive: true, healthy: true });
    // The restarted steering got its secrets by env again, not by argv.
    expect((await readFile(`/proc/${after.pid}/cmdline`, 'utf8')).includes(state.tokenSecret)).toBe(false);
    expect((await readFile(`/proc/${after.pid}/environ`, 'utf8')).split('\0')).toContain(`OCDN_TOKEN_SECRET=${state.tokenSecret}`);
    // The edges find it again.
    await waitFor(
      async () => {
        const res = await fetch(`${after.url}/v1/edges`);
        const body = (await res.json()) as { edges: { id: string; healthy: boolean }[] };
        return body.edges.filter((e) => e.healthy).length === 2;
      },
      { timeoutMs: 60_000, intervalMs: 250, what: 'both edges back in the restarted steering' },
    );
  }, 120_000);

  it('a chaos-killed edge stays down while supervisor passes go by, until chaos restore', async () => {
    const before = await comp('edge-1');
    const kill = await cli('chaos', 'kill-edge', 'edge-1');
    expect(kill.code, kill.stderr).toBe(0);
    expect(isAlive(before.pid)).toBe(false);
    const held = (await status()).find((r) => r.name === 'edge-1')!;
    expect(held).toMatchObject({ alive: false, healthy: false, held: { by: 'chaos' } });
    expect(held.held!.until).toBeUndefined();
    // Well past the supervisor's first backoff (500 ms): seen by passes of the loop, not by a sleep.
    const sup = (await readState(dir))!.components.find((c) => c.kind === 'supervisor')!;
    const tickAt = async () => Date.parse(((await (await fetch(`${sup.url}/healthz`)).json()) as { lastTickAt: string }).lastTickAt);
    const t0 = Date.now();
    await waitFor(async () => (await tickAt()) > t0 + 3_000, { timeoutMs: 20_000, intervalMs: 250, what: 'supervisor passes 3 s after the kill' });
    expect(await comp('edge-1')).toMatchObject({ pid: before.pid, held: { by: 'chaos' } });
    expect(await portInUse(before.port)).toBe(false);

    const r = await cli('chaos', 'restore', 'edge-1');
    expect(r.code, r.stderr).toBe(0);
    const back = await comp('edge-1');
    expect(back.pid).not.toBe(before.pid);
    expect(back.held).toBeUndefined();
    expect(back.restarts ?? 0).toBe(0); // a planned restart, not a crash
    expect(await healthy(back.url)).toBe(true);
  }, 120_000);

  it('kill-edge --restart-after: back after the delay, started once (by the supervisor, not chaos as well)', async () => {
    const before = await comp('edge-2');
    const t0 = Date.now();
    const r = await cli('chaos', 'kill-edge', 'edge-2', '--restart-after', '2s');
    expect(r.code, r.stderr).toBe(0);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(2_000);
    const back = await comp('edge-2');
    expect(back.pid).not.toBe(before.pid);
    expect(back.held).toBeUndefined();
    expect(await healthy(back.url)).toBe(true);
    // Other test files run clusters with an edge-2 of their own: this one is known by its port.
    const serving = (await allCommandLines()).filter((l) => l.includes('edge serve --id edge-2 ') && l.includes(` --port ${back.port} `));
    // ps and /proc each list it once: one process, not two.
    expect(serving).toHaveLength(2);
  }, 120_000);

  it('cluster down stops the supervisor first and leaves no process or listener', async () => {
    const now = (await readState(dir))!;
    const pids = now.components.filter((c) => !c.external).map((c) => c.pid);
    const ports = now.components.filter((c) => !c.external && c.port > 0).map((c) => c.port);
    const down = await cli('cluster', 'down');
    expect(down.code, down.stderr).toBe(0);
    expect(down.stderr.split('\n').find((l) => l.includes('stopping'))).toMatch(/stopping supervisor/);
    for (const pid of pids) expect(isAlive(pid), `pid ${pid}`).toBe(false);
    for (const port of ports) expect(await portInUse(port), `port ${port}`).toBe(false);
    expect((await allCommandLines()).filter((l) => l.includes(`cluster supervise --dir ${dir}`))).toEqual([]);
  }, 120_000);
});

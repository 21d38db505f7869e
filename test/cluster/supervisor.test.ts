/**
 * The supervisor's decisions on a cluster.json with real (tiny) processes and a given clock:
 * backoff that grows, a crash loop that goes to the max delay and says so, holds that keep a
 * component down until their time, and a count of restarts in the file.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isAlive } from '../../common/ports.ts';
import { waitFor } from '../../common/retry.ts';
import { readState, writeState, type ClusterState, type ComponentState } from '../../scripts/cluster/state.ts';
import { Supervisor } from '../../scripts/cluster/supervisor.ts';

/** A child that ends at once (a crash) or runs until killed. */
function child(lives: boolean): number {
  const c = spawn(process.execPath, ['-e', lives ? 'setTimeout(() => {}, 600000)' : ''], { stdio: 'ignore' });
  c.unref();
  return c.pid!;
}

describe('supervisor', () => {
  let dir: string;
  let lines: { level: number; msg: string; component?: string; delayMs?: number }[];
  let spawned: number[];
  const started: number[] = [];

  const comp = (name: string, pid: number, extra: Partial<ComponentState> = {}): ComponentState => ({
    name,
    kind: 'aggregator',
    pid,
    port: 0,
    url: '',
    log: join(dir, `${name}.log`),
    args: ['telemetry', 'aggregate'],
    ...extra,
  });

  const sup = (lives = false) =>
    new Supervisor({
      dir,
      stableMs: 10_000,
      crashLoopAfter: 3,
      backoff: { baseMs: 100, maxMs: 1_000 },
      log: pino(
        { level: 'info' },
        new Writable({
          write(chunk: Buffer, _e, cb) {
            for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l));
            cb();
          },
        }),
      ),
      spawn: async () => {
        const pid = child(lives);
        spawned.push(pid);
        started.push(pid);
        return { pid, log: '' };
      },
    });

  const component = async (name: string) => (await readState(dir))!.components.find((c) => c.name === name)!;
  const deadPid = async () => {
    const pid = child(false);
    await waitFor(() => !isAlive(pid), { timeoutMs: 10_000, what: 'a child to end' });
    return pid;
  };
  const lastDead = () => waitFor(() => !isAlive(spawned.at(-1)!), { timeoutMs: 10_000, what: 'the restarted child to end' });

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ocdn-sup-'));
    lines = [];
    spawned = [];
  });
  afterEach(async () => {
    for (const pid of started.splice(0)) if (isAlive(pid)) process.kill(pid, 'SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });

  const write = (components: ComponentState[]) =>
    writeState({
      version: 1,
      startedAt: '',
      dir,
      tokenSecret: 's',
      adminToken: 'a',
      s3Endpoint: '',
      bucket: '',
      brokers: '',
      steeringUrl: '',
      aggregatorUrl: '',
      components,
    } as ClusterState);

  it('restarts a dead component after a backoff that doubles, then holds at the max delay in a crash loop and logs it at error', async () => {
    await write([comp('agg', await deadPid())]);
    const s = sup(false);
    await s.tick(0);
    await s.tick(99);
    expect(spawned).toHaveLength(0);
    await s.tick(100);
    expect(spawned).toHaveLength(1);
    expect(await component('agg')).toMatchObject({ pid: spawned[0], restarts: 1 });

    // It dies again at once: 200 ms, then 400 ms.
    await lastDead();
    await s.tick(100);
    await s.tick(299);
    expect(spawned).toHaveLength(1);
    await s.tick(300);
    expect(spawned).toHaveLength(2);
    await lastDead();
    await s.tick(300);
    await s.tick(699);
    expect(spawned).toHaveLength(2);
    await s.tick(700);
    expect(spawned).toHaveLength(3);

    // Third quick death: a crash loop, so the max (1000 ms) rather than the next step (800 ms).
    await lastDead();
    await s.tick(700);
    await s.tick(1_500);
    expect(spawned).toHaveLength(3);
    await s.tick(1_700);
    expect(spawned).toHaveLength(4);
    expect(await component('agg')).toMatchObject({ restarts: 4 });
    const loud = lines.filter((l) => l.level >= 50 && /crash loop/.test(l.msg));
    expect(loud).toHaveLength(1);
    expect(loud[0]).toMatchObject({ component: 'agg', delayMs: 1_000 });
    expect(lines.filter((l) => l.msg === 'component restarted')).toHaveLength(4);
  });

  it('a component up for stableMs starts from the first delay again', async () => {
    await write([comp('agg', await deadPid())]);
    const s = sup(true);
    await s.tick(0);
    await s.tick(100);
    expect(spawned).toHaveLength(1);
    await s.tick(10_100); // alive and stable: backoff reset
    process.kill(spawned[0]!, 'SIGKILL');
    await lastDead();
    await s.tick(20_000);
    await s.tick(20_099);
    expect(spawned).toHaveLength(1);
    await s.tick(20_100);
    expect(spawned).toHaveLength(2);
    expect(await component('agg')).toMatchObject({ restarts: 2 });
  });

  it('a chaos hold keeps a dead component down until its time, then it is started once, not counted as a crash', async () => {
    await write([
      comp('edge-1', await deadPid(), { kind: 'edge', held: { by: 'chaos', since: '' } }),
      comp('edge-2', await deadPid(), { kind: 'edge', held: { by: 'chaos', since: '', until: new Date(5_000).toISOString() } }),
    ]);
    const s = sup(true);
    for (const t of [0, 1_000, 4_999]) await s.tick(t);
    expect(spawned).toHaveLength(0);
    await s.tick(5_000);
    expect(spawned).toHaveLength(1);
    const e2 = await component('edge-2');
    expect(e2.pid).toBe(spawned[0]);
    expect(e2.held).toBeUndefined();
    expect(e2.restarts ?? 0).toBe(0);
    for (const t of [6_000, 100_000]) await s.tick(t);
    expect(spawned).toHaveLength(1);
    expect((await component('edge-1')).held).toEqual({ by: 'chaos', since: '' });
  });

  it('leaves external components, the players and itself alone, and reports the cluster gone when cluster.json is', async () => {
    await write([
      comp('kafka', 0, { kind: 'kafka', external: true, args: undefined }),
      comp('players', await deadPid(), { kind: 'players' }),
      comp('supervisor', await deadPid(), { kind: 'supervisor' }),
    ]);
    const s = sup(true);
    for (const t of [0, 1_000, 60_000]) expect(await s.tick(t)).toBe(true);
    expect(spawned).toHaveLength(0);
    await rm(join(dir, 'cluster.json'));
    expect(await s.tick(70_000)).toBe(false);
  });
});

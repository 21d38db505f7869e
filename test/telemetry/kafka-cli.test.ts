/**
 * `ocdn kafka up | status | down` as a user runs them: a broker of its own in the background,
 * its topics listed, then stopped with no process and no bound port left.
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { freePortBlock, isAlive, portInUse } from '../../common/ports.ts';
import { cliEnv, runCli } from '../cli-run.ts';

describe('ocdn kafka up / status / down', () => {
  let dir: string | undefined;
  afterAll(async () => {
    if (!dir) return;
    await runCli(['kafka', 'down', '--dir', dir], cliEnv()).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });

  it('starts a broker in the background, reports its topics, and stops it cleanly', { timeout: 240_000 }, async () => {
    dir = await mkdtemp(join(tmpdir(), 'ocdn-kafka-cli-'));
    // `kafka up` puts the controller on port + 1: both must be free.
    const port = await freePortBlock([0, 1]);
    const env = cliEnv({ unset: ['KAFKA_BROKERS'] });
    const up = await runCli(['kafka', 'up', '--dir', dir, '--port', String(port)], env);
    expect(up.code, up.stderr).toBe(0);
    const pid = Number(readFileSync(join(dir, 'broker.pid'), 'utf8').trim());
    expect(isAlive(pid)).toBe(true);

    const status = await runCli(['kafka', 'status', '--dir', dir, '--port', String(port), '--json'], env);
    expect(status.code, status.stderr).toBe(0);
    const s = JSON.parse(status.stdout) as { reachable: boolean; alive: boolean; topics: { name: string; partitions: number }[] };
    expect(s).toMatchObject({ reachable: true, alive: true });
    expect(s.topics.map((t) => t.name)).toEqual(expect.arrayContaining(['ocdn.qoe.events.v1', 'ocdn.qoe.aggregates.v1', 'ocdn.qoe.dlq.v1']));
    expect(s.topics.find((t) => t.name === 'ocdn.qoe.events.v1')!.partitions).toBeGreaterThanOrEqual(6);

    const again = await runCli(['kafka', 'up', '--dir', dir, '--port', String(port)], env);
    // Idempotent: a second `up` finds the running broker and starts nothing.
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toMatch(/already running/);
    expect(Number(readFileSync(join(dir, 'broker.pid'), 'utf8').trim())).toBe(pid);

    const down = await runCli(['kafka', 'down', '--dir', dir], env);
    expect(down.code, down.stderr).toBe(0);
    expect(isAlive(pid)).toBe(false);
    expect(await portInUse(port)).toBe(false);
    expect(await portInUse(port + 1)).toBe(false);

    const after = await runCli(['kafka', 'status', '--dir', dir, '--port', String(port), '--json'], env);
    expect(after.code).not.toBe(0);
  });
});

import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cliEnv as sharedCliEnv, runCli as runCliChild } from '../cli-run.ts';
import type { RunSummary } from '../../player-sim/runner.ts';

const run = (args: string[]) => runCliChild(args, sharedCliEnv({ unset: ['OCDN_STEERING_URL', 'KAFKA_BROKERS', 'OCDN_PLAYERS'] }));

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ocdn-play-cli-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('ocdn play', () => {
  it('--virtual --json prints the summary and writes the events file', async () => {
    const events = join(dir, 'ev.jsonl');
    const r = await run([
      'play',
      '--virtual',
      '--players',
      '30',
      '--ramp',
      '5s',
      '--duration',
      '40s',
      '--network',
      'step:6mbps,1mbps@20s',
      '--abr',
      'bola',
      '--seed',
      '7',
      '--json',
      '--events-file',
      events,
    ]);
    expect(r.code, r.stderr).toBe(0);
    const s = JSON.parse(r.stdout) as RunSummary;
    expect(s).toMatchObject({ mode: 'virtual', abr: 'bola', players: 30, startFailures: 0 });
    expect(s.sessions).toBeGreaterThanOrEqual(30);
    expect(s.edges.length).toBe(2);
    const lines = (await readFile(events, 'utf8')).trim().split('\n');
    const ends = lines.map((l) => JSON.parse(l) as { type: string }).filter((e) => e.type === 'session_end');
    expect(ends.length).toBe(s.sessions);
  });

  it('prints a table by default', async () => {
    const r = await run(['play', '--virtual', '--players', '5', '--duration', '20s', '--events-file', join(dir, 't.jsonl')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/VST p50/);
    expect(r.stdout).toMatch(/vedge-1/);
  });

  it('rejects bad usage with exit code 2 and every problem listed', async () => {
    const r = await run(['play', '--players', '0', '--abr', 'mpc']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--players/);
    expect(r.stderr).toMatch(/--abr/);
    const r2 = await run(['play', '--players', '3']);
    expect(r2.code).toBe(2);
    expect(r2.stderr).toMatch(/--steering URL or --edge URL/);
    const r3 = await run(['play', '--virtual', '--network', 'step:1mbps,2mbps', '--events-file', join(dir, 'never.jsonl')]);
    expect(r3.code).toBe(2);
    expect(r3.stderr).toMatch(/--network/);
    // a bad command line fails before anything is opened
    await expect(readFile(join(dir, 'never.jsonl'))).rejects.toThrow();
  });
});

/**
 * The `ocdn` command as a whole: help lists every command group, and usage mistakes anywhere
 * exit 2 with commander's message rather than a stack trace.
 */
import { describe, expect, it } from 'vitest';
import { cliEnv, runCli } from './cli-run.ts';

const GROUPS = [
  'cluster',
  'start',
  'loadtest',
  'lab',
  'chaos',
  'fill',
  'origin',
  'content',
  'edge',
  'steering',
  'steer',
  'kafka',
  'telemetry',
  'qoe',
  'play',
  'console',
];

describe('ocdn', () => {
  it('--help lists every command group and exits 0', async () => {
    const r = await runCli(['--help'], cliEnv());
    expect(r.code).toBe(0);
    const listed = new Set([...r.stdout.matchAll(/^ {2}([a-z][\w-]*)\b/gm)].map((m) => m[1]));
    for (const g of GROUPS) expect(listed, r.stdout).toContain(g);
  });

  it.each([
    [['bogus'], /unknown command 'bogus'/],
    [['content', 'seed', '--nope'], /unknown option '--nope'/],
    [['edge', 'serve', '--port'], /argument missing/],
  ])('%j → exit 2 with the reason', async (args, message) => {
    const r = await runCli(args, cliEnv());
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(r.stderr).not.toMatch(/^\s+at /m);
  });
});

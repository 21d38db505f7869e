/**
 * The README's CLI tour, run as a new user would: each line of its code block exactly as written,
 * through bash, from a fresh working directory, with `ocdn` on PATH and no endpoint or secret in the
 * environment. The commands must find the cluster from ./.ocdn/cluster.json alone.
 */
import { spawn } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_KAFKA_PORT, DEFAULT_PORTS, readStateSync } from '../common/cluster-context.ts';
import { isAlive, portInUse } from '../common/ports.ts';
import { BIN, cliEnv, ROOT } from './cli-run.ts';

/** The lines of the fenced block under "## CLI tour", comments stripped. */
async function tourLines(): Promise<string[]> {
  const readme = await readFile(join(ROOT, 'README.md'), 'utf8');
  const m = /## CLI tour\n[\s\S]*?```sh\n([\s\S]*?)```/.exec(readme);
  if (!m) throw new Error('README.md has no "## CLI tour" with a ```sh block');
  return m[1]!
    .split('\n')
    .map((l) => l.replace(/\s+#.*$/, '').trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
}

/** The cluster's default ports (3 edges): the tour names some of them, so they must be free. */
const TOUR_PORTS = [
  DEFAULT_PORTS.steering,
  DEFAULT_PORTS.edge(0),
  DEFAULT_PORTS.edge(1),
  DEFAULT_PORTS.edge(2),
  DEFAULT_PORTS.aggregator,
  DEFAULT_PORTS.s3,
  DEFAULT_PORTS.console,
  DEFAULT_KAFKA_PORT,
  DEFAULT_KAFKA_PORT + 1,
];

interface Ran {
  code: number | null;
  out: string;
}

describe('README CLI tour', () => {
  let cwd: string;
  let env: NodeJS.ProcessEnv;

  const sh = (line: string, timeoutMs: number): Promise<Ran> =>
    new Promise((resolve, reject) => {
      const child = spawn('bash', ['-c', line], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (out += d.toString()));
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      child.on('error', reject);
      child.on('close', (code) => {
        clearTimeout(timer);
        resolve({ code, out });
      });
    });

  beforeAll(async () => {
    const busy: number[] = [];
    for (const p of TOUR_PORTS) if (await portInUse(p)) busy.push(p);
    if (busy.length > 0) throw new Error(`the tour uses the cluster's default ports; in use: ${busy.join(', ')} (a cluster running? "ocdn cluster down")`);
    cwd = await mkdtemp(join(tmpdir(), 'ocdn-tour-'));
    await writeFile(join(cwd, 'ocdn'), `#!/bin/sh\nexec "${process.execPath}" "${BIN}" "$@"\n`);
    await chmod(join(cwd, 'ocdn'), 0o755);
    env = cliEnv({
      unset: [
        'OCDN_DIR',
        'KAFKA_BROKERS',
        'OCDN_S3_ENDPOINT',
        'OCDN_S3_BUCKET',
        'OCDN_STEERING_URL',
        'OCDN_AGGREGATOR_URL',
        'OCDN_TOKEN_SECRET',
        'OCDN_ADMIN_TOKEN',
      ],
    });
    delete env.OCDN_DIR;
    env.PATH = `${cwd}:${env.PATH ?? ''}`;
    env.OCDN_LOG_LEVEL = 'warn';
  });

  afterAll(async () => {
    if (!cwd) return;
    // A line that failed midway leaves the cluster up: take it down whatever happened.
    await sh('ocdn cluster down', 120_000).catch(() => undefined);
    await rm(cwd, { recursive: true, force: true });
  });

  it('every line exits 0 with no endpoint or secret flags, and cluster down leaves no listener and no supervisor', { timeout: 900_000 }, async () => {
    const lines = await tourLines();
    expect(lines[0]).toMatch(/^ocdn cluster up\b/);
    expect(lines.at(-1)).toMatch(/ocdn cluster down$/);
    let supervisorPid: number | undefined;
    for (const line of lines) {
      if (line === lines.at(-1)) supervisorPid = readStateSync(join(cwd, '.ocdn'))?.components.find((c) => c.kind === 'supervisor')?.pid;
      const r = await sh(line, 300_000);
      expect({ line, code: r.code, out: r.code === 0 ? '' : r.out.slice(-3000) }).toEqual({ line, code: 0, out: '' });
    }
    const listening: number[] = [];
    for (const p of TOUR_PORTS) if (await portInUse(p)) listening.push(p);
    expect(listening).toEqual([]);
    // The cluster ran supervised, and down stopped the supervisor too.
    expect(supervisorPid).toBeGreaterThan(0);
    expect(isAlive(supervisorPid!)).toBe(false);
  });
});

import { spawn } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const ROOT = join(import.meta.dirname, '..');
export const BIN = join(ROOT, 'bin', 'ocdn.js');

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * The environment of a CLI child that must behave as for a user: no test-runner defaults (silent
 * logs), no debug stacks, and none of the given variables a developer's shell may have set.
 */
export function cliEnv(opts: { logLevel?: string; unset?: string[] } = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  if (opts.logLevel) env.OCDN_LOG_LEVEL = opts.logLevel;
  for (const k of ['VITEST', 'OCDN_DEBUG', ...(opts.unset ?? [])]) delete env[k];
  // Commands fill in endpoints from the cluster in OCDN_DIR (else ./.ocdn): a cluster the
  // developer runs in the checkout must not leak into tests, which name their own with --dir.
  env.OCDN_DIR ??= join(tmpdir(), `ocdn-test-${process.pid}-no-cluster`);
  return env;
}

/** Runs `ocdn <args>` to completion and collects its output. */
export function runCli(args: string[], env: NodeJS.ProcessEnv = cliEnv()): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

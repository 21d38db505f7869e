import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, ROOT, cliEnv as sharedCliEnv, runCli as runCliChild } from '../cli-run.ts';
import { signPath, withPathToken } from '../../common/token.ts';
import { bytes, get, startOrigin, type TestOrigin } from './helpers.ts';

const cliEnv = () =>
  sharedCliEnv({
    logLevel: 'info',
    unset: ['OCDN_S3_ENDPOINT', 'OCDN_S3_BUCKET', 'OCDN_TOKEN_SECRET', 'OCDN_ADMIN_TOKEN', 'OCDN_EDGE_KEY', 'OCDN_EDGE_ID', 'OCDN_STEERING_URL'],
  });

const run = (args: string[]) => runCliChild(args, cliEnv());

describe('ocdn edge serve', () => {
  let origin: TestOrigin;

  beforeAll(async () => {
    origin = await startOrigin();
    await origin.put('vod/cli/r/seg-00000.ts', bytes(20_000, 5));
  });

  afterAll(async () => {
    await origin?.close();
  });

  it.each([
    [['edge', 'serve', '--port', '0'], /--id \(or OCDN_EDGE_ID\) is required/],
    [['edge', 'serve', '--id', 'e1', '--port', '0'], /a token secret is required: give --token-secret-file PATH, env OCDN_TOKEN_SECRET, .*; pass --no-tokens/],
    [['edge', 'serve', '--id', 'e1', '--no-tokens', '--token-secret-file', '/etc/hostname'], /--token-secret-file and --no-tokens contradict/],
    [
      ['edge', 'serve', '--id', 'e1', '--no-tokens', '--steering', 'http://127.0.0.1:1'],
      /an edge key is required: give --edge-key-file PATH, env OCDN_EDGE_KEY.*--no-edge-auth/,
    ],
    [
      ['edge', 'serve', '--id', 'e1', '--no-tokens', '--admin-token-file', '/nonexistent/admin'],
      /--admin-token-file: cannot read \/nonexistent\/admin \(ENOENT\)/,
    ],
    [['edge', 'serve', '--id', 'e/1', '--no-tokens', '--capacity', 'lots'], /--id: .*does not match[\s\S]*--capacity: not a byte size/],
    [['edge', 'serve', '--id', 'e1', '--no-tokens', '--parent', 'ftp://x'], /--parent: .*must be an http\(s\) URL/],
    [['edge', 'serve', '--id', 'e1', '--no-tokens', '--policy', 'fifo'], /--policy: "fifo" is not one of lru, sieve, s3fifo/],
    [['edge', 'serve', '--id', 'e1', '--no-tokens', '--disk-dir', '/tmp/x'], /--disk-dir and --disk-capacity go together/],
  ])('%j → exit 2 with the problem', async (args, why) => {
    const r = await run(args);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(why);
    expect(r.stderr).not.toMatch(/^\s+at /m);
  });

  it('takes no secret as a command-line value', async () => {
    for (const flag of ['--token-secret', '--admin-token', '--edge-key']) {
      const r = await run(['edge', 'serve', '--id', 'e1', '--no-tokens', flag, 'abcdefgh12']);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toContain(`unknown option '${flag}'`);
    }
  });

  it('serves, logs where it listens, and exits 0 on SIGTERM', async () => {
    const secret = 'cli-secret-123456';
    const child = spawn(
      process.execPath,
      [BIN, 'edge', 'serve', '--id', 'edge-cli', '--port', '0', '--region', 'us-east', '--capacity', '8MB', '--s3-endpoint', origin.s3.endpoint],
      {
        cwd: ROOT,
        // The secret by env, never in argv.
        env: { ...cliEnv(), OCDN_TOKEN_SECRET: secret },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
    try {
      const url = await new Promise<string>((resolve, reject) => {
        const rl = createInterface({ input: child.stdout });
        rl.on('line', (line) => {
          const rec = JSON.parse(line) as { msg?: string; url?: string };
          if (rec.msg === 'edge listening' && rec.url) resolve(rec.url);
        });
        child.on('close', (code) => reject(new Error(`edge exited ${code} before listening: ${stderr}`)));
      });
      const path = '/vod/cli/r/seg-00000.ts';
      const r = await get(withPathToken(url, path, signPath(secret, path, Math.floor(Date.now() / 1000) + 60)));
      expect(r.status).toBe(200);
      expect(r.body.equals(bytes(20_000, 5))).toBe(true);
      expect((await get(`${url}${path}`)).status).toBe(403);
      const metrics = (await get(`${url}/metrics`)).body.toString();
      expect(metrics).toContain('ocdn_edge_origin_fetches_total{upstream="s3",result="ok",edge="edge-cli"} 1');
      expect(metrics).toContain('process_cpu_user_seconds_total');
      expect(await readFile(`/proc/${child.pid}/cmdline`, 'utf8')).not.toContain(secret);
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      expect(stderr).toBe('');
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });
});

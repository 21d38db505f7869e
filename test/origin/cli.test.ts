import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, describe, expect, it } from 'vitest';
import { BIN, ROOT, cliEnv as sharedCliEnv, runCli as runCliChild } from '../cli-run.ts';
import { freePort } from '../../common/ports.ts';

const cliEnv = () => sharedCliEnv({ logLevel: 'info', unset: ['OCDN_S3_ENDPOINT', 'OCDN_S3_BUCKET'] });

const runCli = (args: string[]) => runCliChild(args, cliEnv());

function expectOneLine(stderr: string): string {
  const lines = stderr.split('\n').filter((l) => l.trim() !== '');
  expect(lines, stderr).toHaveLength(1);
  expect(stderr).not.toMatch(/^\s+at /m); // no stack trace
  return lines[0]!;
}

describe('ocdn content seed: bad input gives one line and a non-zero exit', () => {
  it('--titles -1 → exit 2', async () => {
    const r = await runCli(['content', 'seed', '--titles', '-1']);
    expect(r.code).toBe(2);
    expect(expectOneLine(r.stderr)).toMatch(/E_CONFIG: --titles: -1 is below the minimum 1/);
    expect(r.stdout).toBe('');
  });

  it('--segment 0 → exit 2', async () => {
    const r = await runCli(['content', 'seed', '--segment', '0']);
    expect(r.code).toBe(2);
    expect(expectOneLine(r.stderr)).toMatch(/--segment: 0 is below the minimum/);
  });

  it('--ladder nope → exit 2, naming the choices', async () => {
    const r = await runCli(['content', 'seed', '--ladder', 'nope']);
    expect(r.code).toBe(2);
    expect(expectOneLine(r.stderr)).toMatch(/--ladder: "nope" is not one of apple, small/);
  });

  it('an unreachable --s3-endpoint → exit 1, naming the endpoint', async () => {
    const endpoint = `http://127.0.0.1:${await freePort()}`;
    const r = await runCli(['content', 'seed', '--titles', '1', '--s3-endpoint', endpoint]);
    expect(r.code).toBe(1);
    const line = expectOneLine(r.stderr);
    expect(line).toMatch(/E_S3_UNREACHABLE/);
    expect(line).toContain(endpoint);
  });
});

describe('ocdn origin serve + content seed + content ls', () => {
  let dir: string | undefined;
  let server: ChildProcess | undefined;

  afterAll(async () => {
    if (server && server.exitCode === null) server.kill('SIGKILL');
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('serves, seeds, lists, and exits 0 on SIGTERM', async () => {
    dir = await mkdtemp(join(tmpdir(), 'ocdn-cli-'));
    const child = spawn(process.execPath, [BIN, 'origin', 'serve', '--port', '0', '--dir', dir], {
      cwd: ROOT,
      env: cliEnv(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    server = child;
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    const lines = createInterface({ input: child.stdout! });
    let endpoint: string | undefined;
    for await (const line of lines) {
      const rec = JSON.parse(line) as { msg?: string; endpoint?: string };
      if (rec.msg === 'origin listening') {
        endpoint = rec.endpoint;
        break;
      }
    }
    expect(endpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);

    const seed = await runCli(['content', 'seed', '--titles', '1', '--duration', '8', '--ladder', 'small', '--s3-endpoint', endpoint!, '--json']);
    expect(seed.stderr).not.toMatch(/Warning|Error/);
    expect(seed.code).toBe(0);
    expect(JSON.parse(seed.stdout)).toMatchObject({ titles: 1, objects: 1 + 3 * (1 + 2) + 1, skipped: 0 });
    // Not a TTY here: progress comes as plain lines, ending at 100%.
    expect(seed.stderr.trim().split('\n').at(-1)).toMatch(/^seed: 100% 11\/11 objects/);

    const ls = await runCli(['content', 'ls', '--s3-endpoint', endpoint!]);
    expect(ls.code).toBe(0);
    expect(ls.stdout).toMatch(/^s3:\/\/ocdn-media at http:\/\/127\.0\.0\.1:\d+: 1 titles, 11 objects/);
    expect(ls.stdout).toMatch(/^title-0001\s+1\s+8s\s+2×4s\s+365k,1100k,3000k\s+10\s/m);

    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  });
});

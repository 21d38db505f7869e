import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, ROOT, cliEnv as sharedCliEnv, runCli as runCliChild } from '../cli-run.ts';
import type { SteerResponse } from '../../common/contracts.ts';
import { EMBEDDED_CREDENTIALS } from '../../origin/s3-config.ts';
import { createS3Client } from '../../origin/s3-client.ts';
import { startEmbeddedS3, type EmbeddedS3 } from '../../origin/s3-server.ts';
import { seedContent } from '../../origin/seed.ts';
import { heartbeat, signedHeaders, TEST_EDGE_KEY } from './helpers.ts';

const cliEnv = () =>
  sharedCliEnv({
    logLevel: 'info',
    unset: [
      'OCDN_S3_ENDPOINT',
      'OCDN_S3_BUCKET',
      'OCDN_TOKEN_SECRET',
      'OCDN_EDGE_KEY',
      'OCDN_STEERING_URL',
      'OCDN_STEERING_PORT',
      'OCDN_STEERING_TOPOLOGY',
      'OCDN_STEERING_POLICY',
    ],
  });

const run = (args: string[]) => runCliChild(args, cliEnv());

describe('ocdn steering serve / ocdn steer', () => {
  let dir: string;
  let s3: EmbeddedS3;
  let client: S3Client;
  let server: ChildProcess | undefined;
  let url = '';
  const logLines: string[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ocdn-steering-cli-'));
    s3 = await startEmbeddedS3({ dir, port: 0 });
    client = createS3Client({ s3Endpoint: s3.endpoint, s3Region: 'us-east-1', forcePathStyle: true, ...EMBEDDED_CREDENTIALS }, { maxAttempts: 1 });
    await seedContent({ client, bucket: 'ocdn-media', endpoint: s3.endpoint, titles: 2, durationSec: 4, segmentSec: 4, ladder: 'small', concurrency: 4 });
    // Secrets by file and by env, never in argv.
    await writeFile(join(dir, 'token-secret'), 'cli-secret-123\n', { mode: 0o600 });
    server = spawn(
      process.execPath,
      [
        BIN,
        'steering',
        'serve',
        '--port',
        '0',
        '--token-secret-file',
        join(dir, 'token-secret'),
        '--probe-interval',
        '0',
        '--heartbeat-interval',
        '10m',
        '--s3-endpoint',
        s3.endpoint,
      ],
      { cwd: ROOT, env: { ...cliEnv(), OCDN_EDGE_KEY: TEST_EDGE_KEY }, stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const lines = createInterface({ input: server.stdout! });
    url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`steering did not start:\n${logLines.join('\n')}`)), 30_000);
      lines.on('line', (line) => {
        logLines.push(line);
        let entry: { msg?: string; url?: string } = {};
        try {
          entry = JSON.parse(line) as typeof entry;
        } catch {
          return; // not a log line
        }
        if (entry.msg === 'steering listening' && entry.url) {
          clearTimeout(timer);
          resolve(entry.url);
        }
      });
      server!.once('exit', (code) => reject(new Error(`steering exited with ${code}:\n${logLines.join('\n')}`)));
    });
    // Two signed heartbeats (rise 2, probes off); --heartbeat-interval 10m keeps the edge in for the whole test.
    const unsigned = JSON.stringify(heartbeat({ id: 'edge-a', url: 'http://127.0.0.1:9400', region: 'us-west' }));
    const refused = await fetch(`${url}/v1/edges/heartbeat`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: unsigned });
    expect(refused.status).toBe(401);
    for (const state of ['down', 'up']) {
      const body = JSON.stringify(heartbeat({ id: 'edge-a', url: 'http://127.0.0.1:9400', region: 'us-west' }));
      const res = await fetch(`${url}/v1/edges/heartbeat`, { method: 'POST', headers: { 'content-type': 'application/json', ...signedHeaders(body) }, body });
      expect(res.status).toBe(200);
      expect(((await res.json()) as { state: string }).state).toBe(state);
    }
  });

  afterAll(async () => {
    if (server && server.exitCode === null) {
      const exited = new Promise((r) => server!.once('exit', r));
      server.kill('SIGKILL');
      await exited;
    }
    client?.destroy();
    await s3?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('reports every configuration problem at once and exits 2', async () => {
    const r = await run(['steering', 'serve', '--epsilon', '-1', '--policy', 'fastest', '--topology', join(dir, 'nope.json')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--epsilon: -1 is below the minimum 0/);
    expect(r.stderr).toMatch(/--policy: "fastest" is not one of random, round-robin, least-loaded, hash, hrw-bounded/);
    expect(r.stderr).toMatch(/a token secret is required: give --token-secret-file PATH, env OCDN_TOKEN_SECRET/);
    expect(r.stderr).toMatch(/an edge key is required: give --edge-key-file PATH, env OCDN_EDGE_KEY, .*pass --no-edge-auth/);
    expect(r.stderr).toMatch(/--topology: cannot read .*nope\.json: ENOENT/);
  });

  it('takes its secrets from a file or the environment, never from argv', async () => {
    const argv = await readFile(`/proc/${server!.pid}/cmdline`, 'utf8');
    expect(argv).toContain('--token-secret-file');
    expect(argv).not.toContain('cli-secret-123');
    expect(argv).not.toContain(TEST_EDGE_KEY);
    const [inArgv, missingFile, contradiction] = await Promise.all([
      run(['steering', 'serve', '--token-secret', 'cli-secret-123', '--no-edge-auth']),
      run(['steering', 'serve', '--token-secret-file', join(dir, 'absent'), '--edge-key-file', join(dir, 'absent')]),
      run(['steering', 'serve', '--no-tokens', '--no-edge-auth', '--edge-key-file', join(dir, 'token-secret')]),
    ]);
    expect(inArgv.code).not.toBe(0);
    expect(inArgv.stderr).toMatch(/unknown option '--token-secret'/);
    expect(missingFile.code).toBe(2);
    expect(missingFile.stderr).toMatch(/--token-secret-file: cannot read .*absent \(ENOENT\)/);
    expect(missingFile.stderr).toMatch(/--edge-key-file: cannot read .*absent \(ENOENT\)/);
    expect(contradiction.code).toBe(2);
    expect(contradiction.stderr).toMatch(/--edge-key-file and --no-edge-auth contradict each other/);
  });

  it('prints the ranked list as a table, or the answer as JSON', async () => {
    const [table, json] = await Promise.all([
      run(['steer', '--title', 'title-0001', '--region', 'us-west', '--steering', url]),
      run(['steer', '--title', 'title-0002', '--steering', url, '--json', '--policy', 'hash']),
    ]);
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(/^#\s+edge\s+region\s+reason\s+score\s+url/m);
    expect(table.stdout).toMatch(
      /^1\s+edge-a\s+us-west\s+site\+hash\s+0\.\d{4}\s+http:\/\/127\.0\.0\.1:9400\/t\/\d+\.[A-Za-z0-9_-]{1,64}\.[0-9a-f]{64}\/vod\/title-0001\/master\.m3u8$/m,
    );
    expect(json.code).toBe(0);
    const body = JSON.parse(json.stdout) as SteerResponse;
    expect(body).toMatchObject({ title: 'title-0002', policy: 'hash', edges: [{ id: 'edge-a', reason: 'hash' }] });
  });

  it('fails clearly on an unknown title, a bad title and an unreachable steering', async () => {
    const [unknown, bad, down] = await Promise.all([
      run(['steer', '--title', 'title-0099', '--steering', url]),
      run(['steer', '--title', 'a b', '--steering', url]),
      run(['steer', '--title', 'title-0001', '--steering', 'http://127.0.0.1:1']),
    ]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/steering answered 404: E_NOT_FOUND: unknown title "title-0099"/);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--title: "a b" does not match/);
    expect(down.code).toBe(1);
    expect(down.stderr).toMatch(/cannot reach steering at http:\/\/127\.0\.0\.1:1: ECONNREFUSED/);
  });

  it('shuts down gracefully on SIGTERM', async () => {
    const exited = new Promise<number | null>((r) => server!.once('exit', (code) => r(code)));
    server!.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(logLines.some((l) => l.includes('"msg":"shutdown complete"'))).toBe(true);
  });
});

import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, ROOT, cliEnv as sharedCliEnv, runCli as runCliChild } from '../cli-run.ts';
import { isOcdnError } from '../../common/errors.ts';
import { waitFor } from '../../common/http.ts';
import { freePorts } from '../../common/ports.ts';
import { findJava } from '../../scripts/kafka.ts';
import { ensureTopics } from '../../telemetry/kafka.ts';
import { topicNames } from '../../telemetry/topics.ts';
import { createProducer } from '../../telemetry/producer.ts';
import type { QoeResult } from '../../telemetry/view.ts';
import { brokers, dataset, EXPECTED, produceDataset, settled, T0_EVENT_TIME } from './helpers.ts';

const cliEnv = () => sharedCliEnv({ logLevel: 'warn', unset: ['KAFKA_BROKERS', 'OCDN_AGGREGATOR_URL', 'OCDN_AGGREGATOR_PORT'] });

const run = (args: string[]) => runCliChild(args, cliEnv());

/** The data set's T0 is years old: the aggregator and the recount let it in (see T0_EVENT_TIME). */
const T0_MAX_AGE = `${Math.ceil(T0_EVENT_TIME.maxEventAgeMs / 3_600_000)}h`;

describe('ocdn telemetry aggregate + ocdn qoe', () => {
  let child: ChildProcess;
  let url: string;
  let prefix: string;
  let spillDir: string;
  let exited: Promise<number | null>;

  beforeAll(async () => {
    prefix = `t-cli-${randomBytes(4).toString('hex')}.`;
    const topics = topicNames(prefix);
    await ensureTopics(brokers(), { topics });
    const [port] = await freePorts(1);
    url = `http://127.0.0.1:${port}`;
    child = spawn(
      process.execPath,
      [
        BIN,
        'telemetry',
        'aggregate',
        '--brokers',
        brokers(),
        '--port',
        String(port),
        '--topic-prefix',
        prefix,
        '--group',
        `g-${prefix}`,
        '--window',
        '10s',
        '--grace',
        '1s',
        '--idle',
        '2s',
        '--provisional',
        '200ms',
        '--max-event-age',
        T0_MAX_AGE,
      ],
      { cwd: ROOT, env: cliEnv(), stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let err = '';
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    exited = new Promise((r) => child.once('exit', (code) => r(code)));
    await waitFor(async () => (await fetch(`${url}/healthz`)).ok, { timeoutMs: 90_000, intervalMs: 200, what: `aggregator /healthz (stderr: ${err})` });
    spillDir = await mkdtemp(join(tmpdir(), 'ocdn-spill-'));
    const prod = createProducer({ brokers: brokers(), topic: topics.events, spillFile: join(spillDir, 'p.jsonl'), lingerMs: 5 });
    await produceDataset(prod, dataset());
    await prod.close();
    await settled(url);
  });

  afterAll(async () => {
    if (child && child.exitCode === null) child.kill('SIGKILL');
    if (spillDir) await rm(spillDir, { recursive: true, force: true });
  });

  it('qoe top prints a table by edge', async () => {
    const r = await run(['qoe', 'top', '--url', url, '--by', 'edge', '--window', '1m', '--last', '10m']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^QoE by edge over 1 windows of 60s/);
    expect(lines[2]).toMatch(/^value\s+events\s+sessions\s+vst p50/);
    expect(lines.find((l) => l.startsWith('e3 '))).toMatch(/^e3\s+198\s+99\s/);
    expect(lines.find((l) => l.startsWith('(none)'))).toBeDefined();
  });

  it('qoe report speaks json and csv', async () => {
    const j = await run(['qoe', 'report', '--url', url, '--by', 'all', '--format', 'json']);
    expect(j.code).toBe(0);
    const body = JSON.parse(j.stdout) as QoeResult;
    expect(body.totals[0]!.events).toBe(EXPECTED.all.events);
    const c = await run(['qoe', 'report', '--url', url, '--by', 'region', '--format', 'csv']);
    expect(c.code).toBe(0);
    const rows = c.stdout.trim().split('\n');
    expect(rows[0]!.split(',').slice(0, 5)).toEqual(['window_start', 'window_end', 'final', 'region', 'events']);
    const apRows = rows.filter((l) => l.split(',')[3] === 'ap');
    expect(apRows.reduce((s, l) => s + Number(l.split(',')[4]), 0)).toBe(EXPECTED.byRegion.ap);
  });

  it('qoe watch --once draws sparklines', async () => {
    const r = await run(['qoe', 'watch', '--url', url, '--by', 'edge', '--once']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/rebuffer trend/);
    expect(r.stdout).toMatch(/[▁▂▃▄▅▆▇█]/);
  });

  it('qoe verify finds the live aggregates equal to a recount from the raw topic', async () => {
    const r = await run([
      'qoe',
      'verify',
      '--url',
      url,
      '--brokers',
      brokers(),
      '--topic-prefix',
      prefix,
      '--window',
      '10s',
      '--grace',
      '1s',
      '--max-event-age',
      T0_MAX_AGE,
    ]);
    expect(r.stdout).toMatch(/live aggregates equal the recount/);
    expect(r.code).toBe(0);
  });

  it('usage errors exit 2 with every problem named; an absent aggregator exits 1 with one line', async () => {
    const bad = await run(['telemetry', 'aggregate', '--window', 'soon', '--port', 'x', '--brokers', 'nohost']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--window: not a duration/);
    expect(bad.stderr).toMatch(/--port: "x" is not a number/);
    const dim = await run(['qoe', 'top', '--url', url, '--by', 'planet']);
    expect(dim.code).toBe(2);
    const [dead] = await freePorts(1);
    const none = await run(['qoe', 'top', '--url', `http://127.0.0.1:${dead}`]);
    expect(none.code).toBe(1);
    expect(none.stderr.trim().split('\n')).toHaveLength(1);
    expect(none.stderr).toMatch(/no aggregator answers/);
  });

  it('kafka status lists the topics of a reachable broker and fails on a dead one', async () => {
    const ok = await run(['kafka', 'status', '--brokers', brokers(), '--json']);
    expect(ok.code).toBe(0);
    const st = JSON.parse(ok.stdout) as { reachable: boolean; topics: { name: string; partitions: number }[] };
    expect(st.reachable).toBe(true);
    expect(st.topics.find((t) => t.name === `${prefix}ocdn.qoe.events.v1`)?.partitions).toBe(6);
    const [dead] = await freePorts(1);
    const down = await run(['kafka', 'status', '--brokers', `127.0.0.1:${dead}`, '--dir', spillDir]);
    expect(down.code).toBe(1);
    expect(down.stdout).toMatch(/reachable no/);
  });

  it('SIGTERM stops the aggregator cleanly', async () => {
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  });
});

describe('Kafka prerequisites', () => {
  it('names the package to install when Java is missing', () => {
    try {
      findJava({ PATH: '/nonexistent' });
      expect.fail('should throw');
    } catch (err) {
      expect(isOcdnError(err, 'E_DEPENDENCY_MISSING')).toBe(true);
      expect((err as Error).message).toMatch(/openjdk-17-jre-headless/);
    }
  });
});

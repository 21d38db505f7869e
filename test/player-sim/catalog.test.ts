import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Catalog } from '../../common/contracts.ts';
import { waitFor } from '../../common/http.ts';
import { startEdge, type Edge } from '../../edge/server.ts';
import type { RunSummary } from '../../player-sim/runner.ts';
import { fetchCatalogFrom, titlesByRank } from '../../player-sim/catalog.ts';
import { SteeringRefusal } from '../../player-sim/steer.ts';
import { serializeCatalog } from '../../origin/catalog.ts';
import { startSteering, type Steering } from '../../steering/server.ts';
import { startOrigin } from '../edge/helpers.ts';
import type { ErrorEvent, QoeEvent } from '../../telemetry/events.ts';
import { validateEvent } from '../../telemetry/validate.ts';
import { cliEnv, runCli } from '../cli-run.ts';
import { startTestCdn, type TestCdn } from './helpers.ts';
import { TEST_EDGE_KEY } from '../steering/helpers.ts';

/**
 * Players get their titles from the CDN side: an edge's /catalog.json, or steering's
 * /v1/catalog, never the bucket. The CLI runs as a user would run it, with no S3 flag and no
 * S3 variable in its environment.
 */
const SECRET = 'play-catalog-secret-01';
const S3_ENV = /^(OCDN_S3_|AWS_)/;
const env = () => {
  const e = cliEnv({ unset: ['OCDN_STEERING_URL', 'KAFKA_BROKERS', 'OCDN_PLAYERS', 'OCDN_REGION'] });
  for (const k of Object.keys(e)) if (S3_ENV.test(k)) delete e[k];
  return e;
};
const play = (args: string[]) => {
  expect(args.join(' ')).not.toMatch(/s3|bucket/i);
  const e = env();
  expect(Object.keys(e).filter((k) => S3_ENV.test(k))).toEqual([]);
  return runCli(['play', ...args], e);
};

async function events(path: string): Promise<QoeEvent[]> {
  return (await readFile(path, 'utf8'))
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as QoeEvent);
}

let dir: string;
let cdn: TestCdn;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ocdn-play-catalog-'));
  cdn = await startTestCdn({ titles: 4, durationSec: 24, ladder: 'small', edges: ['edge-solo'] });
});
afterAll(async () => {
  await cdn?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('play --edge against a lone origin + edge (no steering, no cluster)', () => {
  it('20 players read /catalog.json through the edge and play with 0 start failures, no S3 flag', async () => {
    const edge = cdn.edges[0]!;
    const file = join(dir, 'edge.jsonl');
    const r = await play(['--edge', edge.url, '--players', '20', '--ramp', '2s', '--duration', '8s', '--json', '--events-file', file]);
    expect(r.code, r.stderr).toBe(0);
    const s = JSON.parse(r.stdout) as RunSummary;
    process.stderr.write(
      `lone origin+edge: sessions ${s.sessions}, started ${s.started}, start failures ${s.startFailures}, errors ${s.errors}, bytes ${s.bytes}\n`,
    );
    expect(s.startFailures).toBe(0);
    expect(s.errors).toBe(0);
    // sessions started again near the end may be cut before they start: aborted, not failed
    expect(s.started).toBeGreaterThanOrEqual(20);
    expect(s.bytes).toBeGreaterThan(0);
    expect(s.refusedSessions).toBe(0);
    expect(s.edges.map((e) => e.id)).toEqual(['edge-solo']);
    // the titles came from the catalog, and the catalog came through the edge
    expect(edge.cache.has('/catalog.json')).toBe(true);
    const ids = new Set(cdn.catalog.titles.map((t) => t.id));
    const starts = (await events(file)).filter((e) => e.type === 'session_start');
    expect(starts.length).toBe(s.sessions);
    expect(starts.every((e) => ids.has(e.title))).toBe(true);
  });

  it('an edge with URL tokens on still lists its catalog, and play says the 403s mean tokens', async () => {
    const guarded = await startEdge({
      edgeKey: TEST_EDGE_KEY,
      id: 'edge-tokens',
      region: 'local',
      capacityBytes: 64_000_000,
      origin: cdn.reader,
      tokenSecret: SECRET,
    });
    try {
      const file = join(dir, 'tokens.jsonl');
      const r = await play(['--edge', guarded.url, '--players', '1', '--no-loop', '--start-timeout', '2s', '--json', '--events-file', file]);
      expect(r.code, r.stderr).toBe(0);
      expect(guarded.cache.has('/catalog.json')).toBe(true);
      expect(JSON.parse(r.stdout) as RunSummary).toMatchObject({ sessions: 1, started: 0, startFailures: 1 });
      expect(r.stderr).toMatch(/answered 403 \d+ times: it wants URL tokens.*--no-tokens.*--steering/);
    } finally {
      await guarded.close();
    }
  });

  it('has no S3 flags any more', async () => {
    for (const flag of ['--s3-endpoint', '--bucket']) {
      const r = await runCli(['play', '--edge', 'http://127.0.0.1:1', flag, 'x', '--players', '1'], env());
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(new RegExp(`unknown option '${flag}'`));
    }
  });
});

describe('play --steering', () => {
  let st: Steering;
  let noEdges: Steering;
  let edge: Edge;
  let catalog: Catalog;

  beforeAll(async () => {
    // Steering's catalog is not the bucket's: only two titles, ranked the other way round.
    catalog = {
      ...cdn.catalog,
      titles: cdn.catalog.titles
        .filter((t) => t.id === 'title-0003' || t.id === 'title-0004')
        .map((t) => ({ ...t, popularityRank: t.id === 'title-0004' ? 1 : 2 })),
    };
    st = await startSteering({
      edgeKey: TEST_EDGE_KEY,
      port: 0,
      tokenSecret: SECRET,
      tokenTtlSec: 600,
      catalog,
      registry: { probeIntervalMs: 0, rise: 1, heartbeatIntervalMs: 1_000 },
    });
    noEdges = await startSteering({ edgeKey: TEST_EDGE_KEY, port: 0, tokenSecret: SECRET, catalog, registry: { probeIntervalMs: 0, rise: 1 } });
    edge = await startEdge({
      edgeKey: TEST_EDGE_KEY,
      id: 'edge-st',
      region: 'local',
      capacityBytes: 64_000_000,
      origin: cdn.reader,
      tokenSecret: SECRET,
      steeringUrl: st.url,
      heartbeatIntervalMs: 200,
      drainTimeoutMs: 1_000,
    });
    await waitFor(() => st.registry.counts().up === 1, { timeoutMs: 10_000, what: 'the edge registered' });
  });
  afterAll(async () => {
    await edge?.close();
    await st?.close();
    await noEdges?.close();
  });

  it('draws titles from steering /v1/catalog', async () => {
    const file = join(dir, 'steer.jsonl');
    const r = await play(['--steering', st.url, '--players', '8', '--ramp', '1s', '--duration', '6s', '--json', '--events-file', file]);
    expect(r.code, r.stderr).toBe(0);
    const s = JSON.parse(r.stdout) as RunSummary;
    expect(s.startFailures).toBe(0);
    expect(s.errors).toBe(0);
    expect(s.started).toBeGreaterThanOrEqual(8);
    expect(s.refused).toEqual([]);
    const titles = new Set((await events(file)).filter((e) => e.type === 'session_start').map((e) => e.title));
    expect([...titles].sort()).toEqual(['title-0003', 'title-0004']);
  });

  it('reports a title steering refuses (404 unknown title) per title with the reason: --json, table and the error event', async () => {
    const file = join(dir, 'refused.jsonl');
    const args = [
      '--steering',
      st.url,
      '--titles',
      'title-0003,nope-9',
      '--players',
      '8',
      '--ramp',
      '1s',
      '--no-loop',
      '--duration',
      '5s',
      '--events-file',
      file,
    ];
    const r = await play([...args, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const s = JSON.parse(r.stdout) as RunSummary;
    const refusedSessions = s.refused.reduce((n, t) => n + t.sessions, 0);
    expect(refusedSessions).toBeGreaterThan(0);
    expect(s.refusedSessions).toBe(refusedSessions);
    expect(s.refused).toEqual([
      { title: 'nope-9', status: 404, code: 'E_NOT_FOUND', reason: expect.stringMatching(/unknown title "nope-9"/), sessions: refusedSessions },
    ]);
    // refused sessions never started; the title steering knows played
    expect(s.startFailures).toBe(refusedSessions);
    expect(s.started).toBe(s.sessions - refusedSessions);
    expect(s.started).toBeGreaterThan(0);

    const errors = (await events(file)).filter((e): e is ErrorEvent => e.type === 'error');
    expect(errors).toHaveLength(refusedSessions);
    for (const e of errors) {
      expect(e).toMatchObject({ title: 'nope-9', code: 'E_NOT_FOUND', fatal: true, reason: expect.stringMatching(/unknown title "nope-9"/) });
      expect(validateEvent(e)).toMatchObject({ ok: true });
    }

    const table = await play([...args, '--events-file', join(dir, 'refused-table.jsonl')]);
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout).toMatch(/refused title/);
    expect(table.stdout).toMatch(/nope-9 .*404 .*E_NOT_FOUND .*unknown title "nope-9"/);
  });

  it('reports a 503 (no healthy edge) as the reason a session could not start', async () => {
    const file = join(dir, 'noedge.jsonl');
    const r = await play([
      '--steering',
      noEdges.url,
      '--titles',
      'title-0003',
      '--players',
      '2',
      '--ramp',
      '100ms',
      '--no-loop',
      '--start-timeout',
      '2s',
      '--json',
      '--events-file',
      file,
    ]);
    expect(r.code, r.stderr).toBe(0);
    const s = JSON.parse(r.stdout) as RunSummary;
    expect(s).toMatchObject({ sessions: 2, started: 0, startFailures: 2, refusedSessions: 2 });
    expect(s.refused).toEqual([{ title: 'title-0003', status: 503, code: 'E_NO_EDGE', reason: expect.stringMatching(/no healthy edge/), sessions: 2 }]);
    const errors = (await events(file)).filter((e): e is ErrorEvent => e.type === 'error');
    expect(errors.map((e) => e.reason)).toEqual([expect.stringMatching(/no healthy edge/), expect.stringMatching(/no healthy edge/)]);
  });
});

describe('fetchCatalogFrom', () => {
  it('fails over down the edge list, and says why when no edge has a catalog', async () => {
    const dead = 'http://127.0.0.1:1';
    const c = await fetchCatalogFrom({ edges: [dead, cdn.edges[0]!.url] }, { waitMs: 0 });
    expect(c).toEqual(cdn.catalog);
    expect(titlesByRank(c)).toEqual(['title-0001', 'title-0002', 'title-0003', 'title-0004']);

    const empty = await startOrigin();
    const bare = await startEdge({
      edgeKey: TEST_EDGE_KEY,
      id: 'edge-bare',
      region: 'local',
      capacityBytes: 1_000_000,
      origin: empty.reader,
      tokenSecret: null,
    });
    try {
      const t0 = Date.now();
      // a 404 is an answer, not an outage: no waiting for it to change
      await expect(fetchCatalogFrom({ edges: [bare.url] }, { waitMs: 10_000 })).rejects.toThrow(/catalog\.json answered 404: .*seed content first/);
      expect(Date.now() - t0).toBeLessThan(5_000);
    } finally {
      await bare.close();
      await empty.close();
    }
  });

  it('waits for steering that has no catalog yet (503) until it has one', async () => {
    const origin = await startOrigin();
    const st = await startSteering({
      edgeKey: TEST_EDGE_KEY,
      port: 0,
      tokenSecret: null,
      origin: origin.reader,
      catalogRefreshMs: 200,
      registry: { probeIntervalMs: 0, rise: 1 },
    });
    try {
      await expect(fetchCatalogFrom({ steering: st.url }, { waitMs: 0 })).rejects.toThrow(/v1\/catalog answered 503: .*title catalog unavailable/);
      const pending = fetchCatalogFrom({ steering: st.url }, { waitMs: 20_000 });
      await origin.put('catalog.json', serializeCatalog(cdn.catalog), 'application/json');
      expect(await pending).toEqual(cdn.catalog);
      await expect(fetchCatalogFrom({ steering: 'http://127.0.0.1:1' }, { waitMs: 0 })).rejects.toThrow(
        /no title catalog: http:\/\/127\.0\.0\.1:1\/v1\/catalog/,
      );
    } finally {
      await st.close();
      await origin.close();
    }
  });
});

describe('SteeringRefusal', () => {
  it('takes the code and reason from a flat or nested JSON body, else the text, bounded', () => {
    expect(SteeringRefusal.from(404, '{"error":"E_NOT_FOUND","reason":"unknown title"}')).toMatchObject({
      status: 404,
      code: 'E_NOT_FOUND',
      reason: 'unknown title',
    });
    expect(SteeringRefusal.from(503, '{"error":{"code":"E_NO_EDGE","message":"no healthy edge"}}')).toMatchObject({
      code: 'E_NO_EDGE',
      reason: 'no healthy edge',
      retryable: true,
    });
    const text = SteeringRefusal.from(400, `bad\n${'x'.repeat(2_000)}`);
    expect(text).toMatchObject({ code: 'E_BAD_REQUEST', retryable: false });
    expect(text.reason.length).toBe(512);
    expect(SteeringRefusal.from(502, '{"error":"E_WHATEVER"}')).toMatchObject({ code: 'E_NO_EDGE', reason: '{"error":"E_WHATEVER"}' });
  });
});

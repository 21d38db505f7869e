import * as HLS from 'hls-parser';
import { pino } from 'pino';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Value } from '@sinclair/typebox/value';
import { type EdgeList, EdgeListSchema, type HeartbeatAck, type SteerResponse, SteerResponseSchema } from '../../common/contracts.ts';
import { readMetric } from '../../common/metrics.ts';
import { splitPathToken, verifyToken } from '../../common/token.ts';
import { pathwayPriority, readSteeringTags, type SteeringManifest } from '../../steering/content-steering.ts';
import type { EdgeView, RankedEdge } from '../../steering/policies.ts';
import { startSteering, type Steering } from '../../steering/server.ts';
import { expectErrorBody } from '../error-body.ts';
import { heartbeat, signedHeaders, testCatalog, TEST_EDGE_KEY } from './helpers.ts';

const SECRET = 'steering-test-secret';

/** The path token steering put in a URL path, and the object path under it. */
function pathToken(path: string): { token: string; path: string } {
  const s = splitPathToken(path);
  if (!s.ok || s.token === undefined) throw new Error(`no path token in ${path}`);
  return { token: s.token, path: s.path };
}

async function get(
  url: string,
  dispatcher?: Agent,
): Promise<{ status: number; text: string; json: () => unknown; headers: Record<string, string | string[] | undefined> }> {
  const res = await request(url, { dispatcher });
  const text = await res.body.text();
  return { status: res.statusCode, text, json: () => JSON.parse(text) as unknown, headers: res.headers };
}

async function post(url: string, body: string): Promise<{ status: number; text: string; json: unknown }> {
  // Signed as the edge the body names, as an edge signs its beats.
  const res = await request(url, { method: 'POST', body, headers: { 'content-type': 'application/json', ...signedHeaders(body) } });
  const text = await res.body.text();
  return { status: res.statusCode, text, json: JSON.parse(text) as unknown };
}

describe('steering server (heartbeats from the test, no probes)', () => {
  let st: Steering;
  beforeAll(async () => {
    st = await startSteering({
      edgeKey: TEST_EDGE_KEY,
      port: 0,
      tokenSecret: SECRET,
      tokenTtlSec: 600,
      catalog: testCatalog(20),
      registry: { probeIntervalMs: 0, rise: 1, heartbeatIntervalMs: 60_000 },
    });
  });
  afterAll(async () => {
    await st?.close();
  });

  it('answers 503 with a reason while no edge is healthy', async () => {
    const r = await get(`${st.url}/v1/steer?title=title-0001`);
    expect(r.status).toBe(503);
    expectErrorBody(r.text, 'E_NO_EDGE', /no healthy edge/);
    expect(r.headers['retry-after']).toBe('1');
  });

  it('refuses bad heartbeats with 400 and the reason', async () => {
    const bad = await post(`${st.url}/v1/edges/heartbeat`, JSON.stringify({ id: 'x y', url: 'nope' }));
    expect(bad.status).toBe(400);
    const body = expectErrorBody(bad.text, 'E_BAD_REQUEST', /invalid heartbeat: id: .*url: must be an absolute http\(s\) URL/);
    expect(body.error.details?.problems).toEqual(
      expect.arrayContaining([expect.stringMatching(/^id: /), 'region: is required and must be 1-64 characters of A-Z a-z 0-9 . _ -']),
    );
    expectErrorBody((await post(`${st.url}/v1/edges/heartbeat`, '{not json')).text, 'E_BAD_REQUEST', /not valid JSON/);
    expectErrorBody((await post(`${st.url}/v1/edges/heartbeat`, '')).text, 'E_BAD_REQUEST', /empty body/);
    // The schema's limits: a title too long, a negative load, NaN-free numbers, a URL with a query.
    const beat = heartbeat({ id: 'x', url: 'http://127.0.0.1:9000' });
    for (const [over, field] of [
      [{ titles: ['t'.repeat(257)] }, /^invalid heartbeat: titles: at 0, /],
      [{ egressBps: -1 }, /^invalid heartbeat: egressBps: must be a finite number ≥ 0$/],
      [{ url: 'http://127.0.0.1:9000/?x=1' }, /^invalid heartbeat: url: /],
      [{ parent: 'ftp://p' }, /^invalid heartbeat: parent: /],
    ] as const) {
      const r = await post(`${st.url}/v1/edges/heartbeat`, JSON.stringify({ ...beat, ...over }));
      expect(r.status).toBe(400);
      expectErrorBody(r.text, 'E_BAD_REQUEST', field);
    }
    const wrongMethod = await get(`${st.url}/v1/edges/heartbeat`);
    expect(wrongMethod.status).toBe(405);
    expect(wrongMethod.headers.allow).toBe('POST');
    expectErrorBody(wrongMethod.text, 'E_METHOD', /method GET not allowed/);
  });

  it('registers edges from heartbeats and lists them', async () => {
    for (const [id, region, port] of [
      ['e-east', 'us-east', 9101],
      ['w-1', 'us-west', 9102],
      ['w-2', 'us-west', 9103],
      ['eu-1', 'eu-west', 9104],
    ] as const) {
      const r = await post(`${st.url}/v1/edges/heartbeat`, JSON.stringify(heartbeat({ id, region, url: `http://127.0.0.1:${port}` })));
      expect({ status: r.status, json: r.json }).toEqual({ status: 200, json: { ok: true, id, state: 'up' } satisfies HeartbeatAck });
    }
    const list = (await get(`${st.url}/v1/edges`)).json() as EdgeList;
    expect(Value.Check(EdgeListSchema, list)).toBe(true);
    expect(list.edges.map((e) => [e.id, e.healthy, e.region])).toEqual([
      ['e-east', true, 'us-east'],
      ['eu-1', true, 'eu-west'],
      ['w-1', true, 'us-west'],
      ['w-2', true, 'us-west'],
    ]);
  });

  it('steers to the client region first with signed master URLs', async () => {
    const before = Date.now();
    const r = await get(`${st.url}/v1/steer?title=title-0003&region=us-west&isp=isp-a&session=s-123`);
    expect(r.status).toBe(200);
    const body = r.json() as SteerResponse;
    // The answer is assembled by hand for speed: it must still be exactly the contract.
    expect(Value.Check(SteerResponseSchema, body)).toBe(true);
    expect(body).toMatchObject({ sessionId: 's-123', title: 'title-0003', policy: 'hrw-bounded', site: 'us-west' });
    expect(body.edges.map((e) => e.region)).toEqual(['us-west', 'us-west', 'us-east', 'eu-west']);
    expect(body.edges.map((e) => e.reason)).toEqual(['site+hash', 'site+hash', 'backup-site+hash', 'backup-site+hash']);
    expect(body.expiresAt).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000 + 600_000);
    for (const e of body.edges) {
      const u = new URL(e.url);
      const { path, token } = pathToken(u.pathname);
      expect(u.search).toBe('');
      expect(path).toBe('/vod/title-0003/master.m3u8');
      expect(verifyToken(SECRET, path, token)).toEqual({ ok: true, expires: body.expiresAt / 1000, session: 's-123' });
      // The token covers the whole title, and only it.
      expect(verifyToken(SECRET, '/vod/title-0003/1100k/seg-00001.ts', token).ok).toBe(true);
      expect(verifyToken(SECRET, '/vod/title-0004/master.m3u8', token).ok).toBe(false);
    }
    // Same title, same answer order (rendezvous), new session id when none is given.
    const again = (await get(`${st.url}/v1/steer?title=title-0003&region=us-west`)).json() as SteerResponse;
    expect(again.edges[0]!.id).toBe(body.edges[0]!.id);
    expect(again.sessionId).not.toBe('s-123');
  });

  it('places a client by its source address when no region is given (coverage zones)', async () => {
    const fromEu = new Agent({ localAddress: '127.3.0.7' });
    const fromWest = new Agent({ localAddress: '127.2.0.7' });
    try {
      const eu = (await get(`${st.url}/v1/steer?title=title-0001`, fromEu)).json() as SteerResponse;
      expect(eu.site).toBe('eu-west');
      expect(eu.edges[0]!.id).toBe('eu-1');
      const west = (await get(`${st.url}/v1/steer?title=title-0001`, fromWest)).json() as SteerResponse;
      expect(west.site).toBe('us-west');
      expect(west.edges[0]!.region).toBe('us-west');
      const local = (await get(`${st.url}/v1/steer?title=title-0001`)).json() as SteerResponse;
      expect(local.site).toBe('us-east');
    } finally {
      await fromEu.close();
      await fromWest.close();
    }
  });

  it('refuses bad input with 400/404/410 and clear reasons', async () => {
    const cases: [string, number, 'E_BAD_REQUEST' | 'E_NOT_FOUND' | 'E_GONE', RegExp][] = [
      ['/v1/steer', 400, 'E_BAD_REQUEST', /missing \?title=/],
      ['/v1/steer?title=../../etc', 400, 'E_BAD_REQUEST', /bad title/],
      ['/v1/steer?title=title-0001&region=a%20b', 400, 'E_BAD_REQUEST', /bad region/],
      ['/v1/steer?title=title-0001&policy=fastest', 400, 'E_BAD_REQUEST', /unknown policy "fastest"/],
      ['/v1/steer?title=title-9999', 404, 'E_NOT_FOUND', /unknown title "title-9999"/],
      ['/v1/play/title-9999/master.m3u8', 404, 'E_NOT_FOUND', /unknown title/],
      ['/v1/play/%E0%A4%A/master.m3u8', 400, 'E_BAD_REQUEST', /malformed percent-encoding/],
      ['/v1/steering/nope.json', 404, 'E_NOT_FOUND', /not a steering session id/],
      // Well-formed but unknown (ended, expired, or from before a restart): 410, so players stop reloading.
      ['/v1/steering/abcdefgh12345678.json', 410, 'E_GONE', /has ended or expired/],
      ['/nothing-here', 404, 'E_NOT_FOUND', /not found: \/nothing-here/],
    ];
    for (const [path, status, code, reason] of cases) {
      const r = await get(`${st.url}${path}`);
      expect(r.status, path).toBe(status);
      expect(r.headers['content-type'], path).toBe('application/json; charset=utf-8');
      expectErrorBody(r.text, code, reason);
    }
  });

  it('selects the policy per request', async () => {
    const rr = await Promise.all(
      [1, 2, 3, 4].map(async () => ((await get(`${st.url}/v1/steer?title=title-0001&policy=round-robin`)).json() as SteerResponse).edges[0]!.id),
    );
    expect(new Set(rr).size).toBe(4);
    const body = (await get(`${st.url}/v1/steer?title=title-0001&policy=least-loaded`)).json() as SteerResponse;
    expect(body.policy).toBe('least-loaded');
    expect(body.edges[0]!.reason).toBe('least-loaded');
  });

  it('counts decisions by policy and reason, and serves health', async () => {
    const metrics = (await get(`${st.url}/metrics`)).text;
    expect(readMetric(metrics, 'ocdn_steering_decisions_total', { policy: 'hrw-bounded', reason: 'site+hash' })).toBeGreaterThanOrEqual(5);
    expect(readMetric(metrics, 'ocdn_steering_decisions_total', { policy: 'hrw-bounded', reason: 'no-edge' })).toBe(1);
    expect(readMetric(metrics, 'ocdn_steering_decisions_total', { policy: 'hrw-bounded', reason: 'unknown-title' })).toBeGreaterThanOrEqual(1);
    expect(readMetric(metrics, 'ocdn_steering_decisions_total', { policy: 'round-robin', reason: 'round-robin' })).toBe(4);
    expect(readMetric(metrics, 'ocdn_steering_edges', { state: 'up' })).toBe(4);
    expect(readMetric(metrics, 'ocdn_steering_heartbeats_total', { result: 'invalid' })).toBe(7);
    expect((await get(`${st.url}/healthz`)).json()).toMatchObject({ ok: true, edgesUp: 4, catalog: 20 });
  });

  it('serves a Content Steering master and a manifest re-ranked with current health', async () => {
    const r = await get(`${st.url}/v1/play/title-0002/master.m3u8?region=us-west`);
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toBe('application/vnd.apple.mpegurl');
    const master = HLS.parse(r.text) as HLS.types.MasterPlaylist;
    expect(master.isMasterPlaylist).toBe(true);
    const tags = readSteeringTags(r.text);
    const pathways = [...new Set(tags.variantPathways)];
    expect(pathways).toHaveLength(4);
    expect(tags.pathwayId).toBe(pathways[0]);
    expect(master.variants).toHaveLength(3 * 4);
    // Each variant once per pathway, on that pathway's edge, absolute and signed.
    const edges = new Map((await st.registry.list()).map((e) => [e.id, e.url]));
    master.variants.forEach((v, i) => {
      const pathway = tags.variantPathways[i]!;
      const u = new URL(v.uri);
      expect(`${u.protocol}//${u.host}`).toBe(edges.get(pathway));
      const { path, token } = pathToken(u.pathname);
      expect(path).toMatch(/^\/vod\/title-0002\/(365k|1100k|3000k)\/index\.m3u8$/);
      expect(verifyToken(SECRET, path, token).ok).toBe(true);
    });
    expect(pathways.map((p) => master.variants.filter((_, i) => tags.variantPathways[i] === p).map((v) => v.bandwidth))).toEqual(
      pathways.map(() => [400_000, 1_200_000, 3_300_000]),
    );

    const serverUri = tags.serverUri!;
    expect(serverUri).toMatch(new RegExp(`^${st.url}/v1/steering/[A-Za-z0-9_-]+\\.json$`));
    const manifest = (await get(serverUri)).json() as SteeringManifest;
    // Edges registered a moment ago: the registry is settling, so the short TTL.
    expect(manifest).toEqual({ VERSION: 1, TTL: 5, 'RELOAD-URI': serverUri, 'PATHWAY-PRIORITY': pathways });

    // The player is on the second pathway (same site): it stays there.
    const sticky = (await get(`${serverUri}?_HLS_pathway=${pathways[1]}&_HLS_throughput=5000000`)).json() as SteeringManifest;
    expect(sticky['PATHWAY-PRIORITY']).toEqual([pathways[1], pathways[0], ...pathways.slice(2)]);
    // It cannot sustain even the lowest variant there: another pathway goes first.
    const slow = (await get(`${serverUri}?_HLS_pathway=${pathways[0]}&_HLS_throughput=100000`)).json() as SteeringManifest;
    expect(slow['PATHWAY-PRIORITY']).toEqual([pathways[1], pathways[0], ...pathways.slice(2)]);
    // An edge goes out: it leaves the priority list at the next reload.
    st.registry.heartbeat(heartbeat({ id: pathways[0]!, url: edges.get(pathways[0]!)!, region: 'us-west', healthy: false }));
    const after = (await get(serverUri)).json() as SteeringManifest;
    expect(after['PATHWAY-PRIORITY']).toEqual(pathways.slice(1));
  });
});

describe('pathwayPriority', () => {
  const view = (id: string): EdgeView => ({ id, url: `http://${id}`, region: 'r', load: 0, titles: new Set() });
  const ranked = (...items: [string, string][]): RankedEdge[] => items.map(([id, reason]) => ({ edge: view(id), reason, score: 0 }));

  it('keeps only the session pathways, in the current order', () => {
    expect(
      pathwayPriority({ ranked: ranked(['c', 'site+hash'], ['a', 'site+hash'], ['x', 'site+hash']), sessionPathways: ['a', 'b', 'c'], lowestBandwidth: 1 }),
    ).toEqual({ priority: ['c', 'a'], note: 'ranked' });
  });

  it('does not keep the current pathway first when it is overloaded or in a worse tier', () => {
    const r = ranked(['a', 'site+hash'], ['b', 'backup-site+hash'], ['c', 'site+overload-skip']);
    expect(pathwayPriority({ ranked: r, sessionPathways: ['a', 'b', 'c'], current: 'b', lowestBandwidth: 1 }).priority).toEqual(['a', 'b', 'c']);
    expect(pathwayPriority({ ranked: r, sessionPathways: ['a', 'b', 'c'], current: 'c', lowestBandwidth: 1 }).priority).toEqual(['a', 'b', 'c']);
    expect(pathwayPriority({ ranked: r, sessionPathways: ['a', 'b', 'c'], current: 'gone', lowestBandwidth: 1 }).note).toBe('current-pathway-out');
  });
});

describe('steering server without tokens', () => {
  it('hands out unsigned URLs when the secret is null, and is ready once it has a catalog and an edge', async () => {
    const st = await startSteering({ edgeKey: TEST_EDGE_KEY, port: 0, tokenSecret: null, catalog: testCatalog(2), registry: { probeIntervalMs: 0, rise: 1 } });
    try {
      expect((await get(`${st.url}/readyz`)).status).toBe(503);
      st.registry.heartbeat(heartbeat({ id: 'only', url: 'http://127.0.0.1:9200' }));
      expect((await get(`${st.url}/readyz`)).status).toBe(200);
      const body = (await get(`${st.url}/v1/steer?title=title-0002`)).json() as SteerResponse;
      expect(body.edges.map((e) => e.url)).toEqual(['http://127.0.0.1:9200/vod/title-0002/master.m3u8']);
      expect(body.edges[0]!.reason).toBe('site+hash');
      // The answer is assembled from pieces: an edge URL that needs escaping must still give valid JSON.
      st.registry.heartbeat(heartbeat({ id: 'odd', url: 'http://127.0.0.1:9201/p"q\u2028é', region: 'eu-west' }));
      const r = await get(`${st.url}/v1/steer?title=title-0001&region=eu-west&session=abc`);
      expect(r.json()).toMatchObject({
        sessionId: 'abc',
        edges: [{ id: 'odd', url: 'http://127.0.0.1:9201/p"q\u2028é/vod/title-0001/master.m3u8', region: 'eu-west' }, { id: 'only' }],
      });
    } finally {
      await st.close();
    }
  });
});

describe('steering server with --log-decisions', () => {
  it('logs one info line per decision with the title, site, policy and ranked edges', async () => {
    const lines: Record<string, unknown>[] = [];
    const log = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
    const st = await startSteering({
      edgeKey: TEST_EDGE_KEY,
      port: 0,
      tokenSecret: null,
      catalog: testCatalog(3),
      registry: { probeIntervalMs: 0, rise: 1, heartbeatIntervalMs: 60_000 },
      log,
      logDecisions: true,
    });
    try {
      st.registry.heartbeat(heartbeat({ id: 'e1', region: 'us-east', url: 'http://127.0.0.1:9301' }));
      st.registry.heartbeat(heartbeat({ id: 'w1', region: 'us-west', url: 'http://127.0.0.1:9302' }));
      for (const t of ['title-0001', 'title-0002']) expect((await get(`${st.url}/v1/steer?title=${t}&region=us-east`)).status).toBe(200);
      const steers = lines.filter((l) => l.msg === 'steer');
      expect(steers).toHaveLength(2);
      expect(steers[0]).toMatchObject({
        level: 30,
        title: 'title-0001',
        site: 'us-east',
        policy: 'hrw-bounded',
        edges: ['e1:site+hash', expect.stringMatching(/^w1:backup-site/)],
      });
    } finally {
      await st.close();
    }
  });
});

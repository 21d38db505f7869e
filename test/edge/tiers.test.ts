import { HeartbeatVerifier } from '../../common/edge-key.ts';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Value } from '@sinclair/typebox/value';
import {
  type EdgeHeartbeat,
  type FillJob,
  FillJobListSchema,
  FillJobSchema,
  type FillJobSummary,
  FillJobSummarySchema,
  type PurgeResponse,
  PurgeResponseSchema,
  type SteerResponse,
} from '../../common/contracts.ts';
import { listen, waitFor } from '../../common/http.ts';
import { signPath, withPathToken } from '../../common/token.ts';
import { startEdge, type Edge } from '../../edge/server.ts';
import { BUCKET, GatedReader, bytes, get, metric, post, sha256, startOrigin, type TestOrigin } from './helpers.ts';
import { startSteering } from '../../steering/server.ts';
import { testCatalog, TEST_EDGE_KEY } from '../steering/helpers.ts';
import { expectErrorBody } from '../error-body.ts';

const SECRET = 'tier-secret-0123456789';
const ADMIN = 'admin-token-xyz';
const future = () => Math.floor(Date.now() / 1000) + 600;

describe('shield tier, admin, heartbeat, shutdown', () => {
  let origin: TestOrigin;
  const edges: Edge[] = [];
  const track = (e: Edge) => (edges.push(e), e);

  beforeAll(async () => {
    origin = await startOrigin();
    // A small title: master → two media playlists → segments (one rendition fMP4 with an init section).
    await origin.put(
      'vod/film/master.m3u8',
      '#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-STREAM-INF:BANDWIDTH=800000\n730k/index.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=2200000\n2000k/index.m3u8\n',
    );
    await origin.put('vod/film/730k/index.m3u8', '#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.0,\nseg-00000.ts\n#EXTINF:4.0,\nseg-00001.ts\n#EXT-X-ENDLIST\n');
    await origin.put('vod/film/2000k/index.m3u8', '#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-MAP:URI="init.mp4"\n#EXTINF:4.0,\nseg-00000.m4s\n#EXT-X-ENDLIST\n');
    await origin.put('vod/film/730k/seg-00000.ts', bytes(30_000, 1));
    await origin.put('vod/film/730k/seg-00001.ts', bytes(31_000, 2));
    await origin.put('vod/film/2000k/init.mp4', bytes(900, 3));
    await origin.put('vod/film/2000k/seg-00000.m4s', bytes(50_000, 4));
  });

  afterAll(async () => {
    await Promise.all(edges.map((e) => e.close()));
    await origin?.close();
  });

  it('a child edge fills from its parent, not from S3, with the same ETag', async () => {
    const parent = track(
      await startEdge({ edgeKey: TEST_EDGE_KEY, id: 'shield', region: 'r', capacityBytes: 5_000_000, origin: origin.reader, tokenSecret: SECRET }),
    );
    const child = track(
      await startEdge({ edgeKey: TEST_EDGE_KEY, id: 'child', region: 'r', capacityBytes: 5_000_000, parentUrl: parent.url, tokenSecret: SECRET }),
    );
    const child2 = track(
      await startEdge({ edgeKey: TEST_EDGE_KEY, id: 'child2', region: 'r', capacityBytes: 5_000_000, parentUrl: parent.url, tokenSecret: SECRET }),
    );
    const path = '/vod/film/730k/seg-00000.ts';
    const url = (e: Edge) => withPathToken(e.url, path, signPath(SECRET, path, future()));

    const r1 = await get(url(child));
    expect(r1.status).toBe(200);
    expect(r1.headers['x-cache']).toBe('MISS');
    expect(r1.headers['x-edge-id']).toBe('child');
    expect(r1.body.equals(bytes(30_000, 1))).toBe(true);
    expect(r1.headers.etag).toBe(`"${sha256(bytes(30_000, 1))}"`);
    expect(await metric(parent, 'ocdn_edge_origin_fetches_total', { upstream: 's3' })).toBe(1);
    expect(await metric(child, 'ocdn_edge_origin_fetches_total', { upstream: 'parent' })).toBe(1);
    expect(await metric(child, 'ocdn_edge_origin_fetches_total', { upstream: 's3' })).toBe(0);

    expect((await get(url(child))).headers['x-cache']).toBe('HIT');
    const r3 = await get(url(child2));
    expect(r3.headers['x-cache']).toBe('MISS');
    expect(r3.headers.etag).toBe(r1.headers.etag);
    // The second child's miss was a hit on the shield: S3 saw one GET in all.
    expect(await metric(parent, 'ocdn_edge_origin_fetches_total', { upstream: 's3' })).toBe(1);
    expect(await metric(parent, 'ocdn_edge_requests_total', { cache: 'HIT' })).toBe(1);

    const missing = await get(withPathToken(child.url, '/vod/film/730k/seg-09999.ts', signPath(SECRET, '/vod/film/x', future())));
    expect(missing.status).toBe(404);
    expect(JSON.parse((await get(`${child.url}/readyz`)).body.toString())).toMatchObject({ ready: true, upstream: 'parent' });
  });

  it('admin fill prefetches a whole title through its playlists; purge drops (hard) or revalidates (soft)', async () => {
    const edge = track(
      await startEdge({
        edgeKey: TEST_EDGE_KEY,
        id: 'edge-adm',
        region: 'r',
        capacityBytes: 5_000_000,
        origin: origin.reader,
        tokenSecret: null,
        adminToken: ADMIN,
      }),
    );
    const auth = { authorization: `Bearer ${ADMIN}` };
    const anonymous = await post(`${edge.url}/admin/fill`, { title: 'film' });
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers['www-authenticate']).toBe('Bearer realm="ocdn-edge-admin"');
    expectErrorBody(anonymous.body, 'E_UNAUTHORIZED', /admin token required/);
    expect((await post(`${edge.url}/admin/fill`, { title: 'film' }, { authorization: 'Bearer wrong' })).status).toBe(401);
    // Bodies that break the FillRequest schema, or what it cannot say (servable keys, keys or title).
    const refusals: [unknown, RegExp][] = [
      [{ title: '../etc' }, /^invalid fill request: title: must be a title id/],
      [{ keys: 'x' }, /^invalid fill request: keys: must be an array of strings/],
      [{ keys: [1] }, /^invalid fill request: keys: at 0, every key must be a string/],
      [{ title: 'film', wait: 'yes' }, /^invalid fill request: wait: must be true or false/],
      [{ title: 'film', bytesPerSecond: -5 }, /^invalid fill request: bytesPerSecond: must be a positive number/],
      [[], /^invalid fill request: must be a JSON object/],
      [{ keys: ['/vod/../x'] }, /^invalid keys: "\/vod\/\.\.\/x"/],
      [{}, /give "keys" \(non-empty\) or "title"/],
    ];
    for (const [body, why] of refusals) {
      const r = await post(`${edge.url}/admin/fill`, body, auth);
      expect(r.status, JSON.stringify(body)).toBe(400);
      expectErrorBody(r.body, 'E_BAD_REQUEST', why);
    }
    expectErrorBody((await get(`${edge.url}/admin/fill/nope`, auth)).body, 'E_NOT_FOUND', /no fill job "nope"/);
    const put = await get(`${edge.url}/admin/purge`, auth, 'PUT');
    expect(put.status).toBe(405);
    expectErrorBody(put.body, 'E_METHOD');

    const res = await post(`${edge.url}/admin/fill`, { title: 'film', bytesPerSecond: '1GB', wait: true }, auth);
    expect(res.status).toBe(200);
    const job = JSON.parse(res.body.toString()) as FillJob;
    expect(Value.Check(FillJobSchema, job)).toBe(true);
    expect(job).toMatchObject({ state: 'done', keys: 7, done: 7, failed: [] });
    const all = [
      '/vod/film/master.m3u8',
      '/vod/film/730k/index.m3u8',
      '/vod/film/2000k/index.m3u8',
      '/vod/film/730k/seg-00000.ts',
      '/vod/film/730k/seg-00001.ts',
      '/vod/film/2000k/init.mp4',
      '/vod/film/2000k/seg-00000.m4s',
    ];
    for (const k of all) expect(edge.cache.has(k), k).toBe(true);
    expect(await metric(edge, 'ocdn_edge_origin_fetches_total')).toBe(7);
    expect((await get(`${edge.url}/vod/film/730k/seg-00001.ts`)).headers['x-cache']).toBe('HIT');

    // A fill without wait answers 202 at once; cached keys are not fetched again.
    const again = await post(`${edge.url}/admin/fill`, { keys: ['vod/film/730k/seg-00000.ts', '/vod/film/nope.ts'] }, auth);
    expect(again.status).toBe(202);
    const summary = JSON.parse(again.body.toString()) as FillJobSummary;
    expect(Value.Check(FillJobSummarySchema, summary)).toBe(true);
    const id = summary.id;
    expect(Value.Check(FillJobListSchema, JSON.parse((await get(`${edge.url}/admin/fill`, auth)).body.toString()))).toBe(true);
    const done = await waitFor(
      async () => {
        const j = JSON.parse((await get(`${edge.url}/admin/fill/${id}`, auth)).body.toString()) as FillJob;
        return j.state === 'done' ? j : undefined;
      },
      { what: 'fill job' },
    );
    expect(done).toMatchObject({ keys: 2, done: 2, alreadyCached: 1, failed: [{ key: '/vod/film/nope.ts', reason: 'not found' }] });

    const hard = await post(`${edge.url}/admin/purge`, { prefix: '/vod/film/730k/' }, auth);
    expect(Value.Check(PurgeResponseSchema, JSON.parse(hard.body.toString()))).toBe(true);
    expect(JSON.parse(hard.body.toString()) as PurgeResponse).toEqual({ prefix: '/vod/film/730k/', soft: false, purged: 3 });
    expect(edge.cache.has('/vod/film/730k/seg-00000.ts')).toBe(false);
    expect(edge.cache.has('/vod/film/2000k/init.mp4')).toBe(true);
    expect((await get(`${edge.url}/vod/film/730k/seg-00000.ts`)).headers['x-cache']).toBe('MISS');

    const soft = await post(`${edge.url}/admin/purge`, { prefix: 'vod/film/2000k/', soft: true }, auth);
    expect(JSON.parse(soft.body.toString())).toMatchObject({ soft: true, purged: 3 });
    expect(edge.cache.has('/vod/film/2000k/init.mp4')).toBe(true); // kept for stale-if-error
    const fetches = await metric(edge, 'ocdn_edge_origin_fetches_total');
    const reval = await get(`${edge.url}/vod/film/2000k/init.mp4`);
    expect(reval.headers['x-cache']).toBe('MISS');
    expect(reval.headers['cache-status']).toBe('ocdn-edge-adm; fwd=stale; stored');
    expect(await metric(edge, 'ocdn_edge_origin_fetches_total')).toBe(fetches + 1);
    expect((await get(`${edge.url}/vod/film/2000k/init.mp4`)).headers['x-cache']).toBe('HIT');

    for (const [body, why] of [
      [{ prefix: '/etc/' }, /^invalid purge request: prefix: must be under \/vod\//],
      [{ prefix: '/vod/../x' }, /^invalid purge request: prefix: /],
      [{ prefix: '/vod/x', soft: 1 }, /^invalid purge request: soft: must be true or false/],
      [{}, /^invalid purge request: prefix: is required/],
    ] as const) {
      const r = await post(`${edge.url}/admin/purge`, body, auth);
      expect(r.status, JSON.stringify(body)).toBe(400);
      expectErrorBody(r.body, 'E_BAD_REQUEST', why);
    }
    const noAdmin = track(
      await startEdge({ edgeKey: TEST_EDGE_KEY, id: 'edge-noadm', region: 'r', capacityBytes: 1_000_000, origin: origin.reader, tokenSecret: null }),
    );
    const disabled = await post(`${noAdmin.url}/admin/purge`, { prefix: '/vod/' }, auth);
    expect(disabled.status).toBe(403);
    expectErrorBody(disabled.body, 'E_FORBIDDEN', /admin API disabled/);
  });

  it('admin fill keeps to its byte rate: the bytes it pulled take at least bytes/rate seconds', async () => {
    const auth = { authorization: `Bearer ${ADMIN}` };
    const probe = track(
      await startEdge({
        edgeKey: TEST_EDGE_KEY,
        id: 'edge-probe',
        region: 'r',
        capacityBytes: 5_000_000,
        origin: origin.reader,
        tokenSecret: null,
        adminToken: ADMIN,
      }),
    );
    const total = JSON.parse((await post(`${probe.url}/admin/fill`, { title: 'film', bytesPerSecond: '1GB', wait: true }, auth)).body.toString())
      .bytesFetched as number;
    expect(total).toBeGreaterThan(0);
    const paced = track(
      await startEdge({
        edgeKey: TEST_EDGE_KEY,
        id: 'edge-paced',
        region: 'r',
        capacityBytes: 5_000_000,
        origin: origin.reader,
        tokenSecret: null,
        adminToken: ADMIN,
      }),
    );
    const rate = Math.ceil(total / 1.5); // the whole title at this rate: 1.5 s
    const t0 = performance.now();
    const job = JSON.parse((await post(`${paced.url}/admin/fill`, { title: 'film', bytesPerSecond: rate, wait: true }, auth)).body.toString());
    const elapsedMs = performance.now() - t0;
    expect(job).toMatchObject({ state: 'done', bytesFetched: total, failed: [] });
    expect(await metric(paced, 'ocdn_edge_origin_bytes_total')).toBe(total);
    // A lower bound only: a slow machine can take longer, never shorter (timer slop allowed).
    expect(elapsedMs).toBeGreaterThanOrEqual((total / rate) * 1000 - 50);
  });

  it('sends heartbeats with the design fields to steering, and a last unhealthy one on close', async () => {
    const beats: EdgeHeartbeat[] = [];
    // Each beat is checked as steering checks it: signed as edge-hb under the cluster key, fresh.
    const verifier = new HeartbeatVerifier(TEST_EDGE_KEY);
    const verdicts: string[] = [];
    const receiver: Server = createServer((req: IncomingMessage, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const h = verifier.headers(req.headers);
        const v = h.ok ? verifier.verify(h, Buffer.concat(chunks)) : h;
        verdicts.push(v.ok ? v.id : v.reason);
        if (req.method === 'POST' && req.url === '/v1/edges/heartbeat') beats.push(JSON.parse(Buffer.concat(chunks).toString()) as EdgeHeartbeat);
        res.writeHead(204).end();
      });
    });
    const port = await listen(receiver, 0);
    try {
      const edge = await startEdge({
        edgeKey: TEST_EDGE_KEY,
        id: 'edge-hb',
        region: 'eu-west',
        capacityBytes: 2_000_000,
        origin: origin.reader,
        tokenSecret: null,
        steeringUrl: `http://127.0.0.1:${port}`,
        heartbeatIntervalMs: 100,
        publicUrl: 'http://edge-hb.example:8401',
      });
      await get(`${edge.url}/vod/film/730k/seg-00001.ts`);
      const beat = await waitFor(() => beats.find((b) => b.titles.includes('film')), { what: 'heartbeat with inventory' });
      expect(beat).toMatchObject({
        id: 'edge-hb',
        url: 'http://edge-hb.example:8401',
        region: 'eu-west',
        capacityBytes: 2_000_000,
        healthy: true,
        titles: ['film'],
      });
      expect(beat.usedBytes).toBe(31_000 + 1024);
      for (const k of ['inFlight', 'rps', 'egressBps', 'ts'] as const) expect(typeof beat[k]).toBe('number');
      await edge.close();
      expect(beats.at(-1)).toMatchObject({ id: 'edge-hb', healthy: false });
      expect(new Set(verdicts)).toEqual(new Set(['edge-hb']));
    } finally {
      receiver.closeAllConnections();
      await new Promise((r) => receiver.close(r));
    }
  });

  it('heartbeats every steering replica given, so each one steers to the edge', async () => {
    const replicas = await Promise.all(
      [0, 1].map(() =>
        startSteering({
          edgeKey: TEST_EDGE_KEY,
          port: 0,
          tokenSecret: null,
          catalog: testCatalog(2),
          registry: { probeIntervalMs: 0, rise: 1, heartbeatIntervalMs: 1_000 },
        }),
      ),
    );
    try {
      track(
        await startEdge({
          edgeKey: TEST_EDGE_KEY,
          id: 'edge-multi',
          region: 'us-east',
          capacityBytes: 2_000_000,
          origin: origin.reader,
          tokenSecret: null,
          steeringUrl: replicas.map((r) => r.url),
          heartbeatIntervalMs: 100,
        }),
      );
      for (const r of replicas) {
        await waitFor(() => r.registry.counts().up === 1, { what: `edge registered with ${r.url}` });
        const steer = (await (await fetch(`${r.url}/v1/steer?title=title-0001`)).json()) as SteerResponse;
        expect(steer.edges.map((e) => e.id)).toEqual(['edge-multi']);
      }
    } finally {
      await Promise.all(replicas.map((r) => r.close()));
    }
  });

  it('keeps serving when steering does not answer at all', async () => {
    const sockets: import('node:net').Socket[] = [];
    const silent = (await import('node:net')).createServer((s) => sockets.push(s.on('error', () => undefined)));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    try {
      const edge = track(
        await startEdge({
          edgeKey: TEST_EDGE_KEY,
          id: 'edge-hb2',
          region: 'r',
          capacityBytes: 2_000_000,
          origin: origin.reader,
          tokenSecret: null,
          steeringUrl: `http://127.0.0.1:${(silent.address() as { port: number }).port}`,
          heartbeatIntervalMs: 50,
        }),
      );
      await waitFor(() => sockets.length > 0, { what: 'a heartbeat connection' });
      for (let i = 0; i < 5; i++) expect((await get(`${edge.url}/vod/film/730k/seg-00000.ts`)).status).toBe(200);
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise((r) => silent.close(r));
    }
  });

  it('graceful shutdown: stops accepting, lets the in-flight response finish', async () => {
    const reader = new GatedReader({ client: origin.client, bucket: BUCKET, timeoutMs: 10_000, retries: 0 });
    const edge = await startEdge({
      edgeKey: TEST_EDGE_KEY,
      id: 'edge-drain',
      region: 'r',
      capacityBytes: 2_000_000,
      origin: reader,
      tokenSecret: null,
      drainTimeoutMs: 10_000,
    });
    const pending = get(`${edge.url}/vod/film/2000k/seg-00000.m4s`);
    await waitFor(() => edge.inFlight === 1, { what: 'request in flight' });
    const closing = edge.close();
    await waitFor(() => !edge.server.listening, { what: 'listener closed' });
    await expect(get(`${edge.url}/healthz`)).rejects.toThrow();
    reader.release();
    const r = await pending;
    expect(r.status).toBe(200);
    expect(r.body.equals(bytes(50_000, 4))).toBe(true);
    await closing;
  });

  it('bounds slow and oversized request headers', async () => {
    const edge = track(
      await startEdge({
        edgeKey: TEST_EDGE_KEY,
        id: 'edge-slow',
        region: 'r',
        capacityBytes: 1_000_000,
        origin: origin.reader,
        tokenSecret: null,
        headersTimeoutMs: 500,
        maxHeaderSize: 8_192,
      }),
    );
    const u = new URL(edge.url);
    const talk = (payload: string) =>
      new Promise<string>((resolve, reject) => {
        const s = connect(Number(u.port), u.hostname, () => s.write(payload));
        let got = '';
        s.on('data', (c: Buffer) => (got += c.toString()));
        s.on('close', () => resolve(got));
        s.on('error', reject);
        s.setTimeout(20_000, () => s.destroy(new Error('server never closed the slow connection')));
      });
    // Slowloris: headers never finish; the server must answer 408 and hang up on its own.
    expect(await talk('GET /vod/film/master.m3u8 HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n')).toMatch(/^HTTP\/1\.1 408/);
    expect(await talk(`GET /vod/film/master.m3u8 HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`)).toMatch(/^HTTP\/1\.1 431/);
    expect((await get(`${edge.url}/healthz`)).status).toBe(200);
  });

  it('cuts a client that stops reading its response (slow read)', async () => {
    await origin.put('vod/huge/r/seg-00000.ts', bytes(32 * 1024 * 1024, 77));
    const edge = track(
      await startEdge({
        edgeKey: TEST_EDGE_KEY,
        id: 'edge-slowread',
        region: 'r',
        capacityBytes: 8_000_000,
        origin: origin.reader,
        tokenSecret: null,
        stalledWriteTimeoutMs: 300,
      }),
    );
    const u = new URL(edge.url);
    const s = connect(Number(u.port), u.hostname, () => s.write('GET /vod/huge/r/seg-00000.ts HTTP/1.1\r\nHost: x\r\n\r\n'));
    s.on('error', () => undefined);
    s.pause(); // never read: the kernel buffers fill and the edge's write stalls
    const connections = () => new Promise<number>((r, j) => edge.server.getConnections((err, n) => (err ? j(err) : r(n))));
    await waitFor(async () => (await connections()) === 1, { what: 'the slow reader to connect' });
    // The paused client cannot see the reset; the edge's own count shows the socket is gone.
    await waitFor(async () => (await connections()) === 0, { timeoutMs: 30_000, what: 'stalled connection to be cut' });
    s.destroy();
    expect((await get(`${edge.url}/healthz`)).status).toBe(200);
  });
});

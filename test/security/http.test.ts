/**
 * HTTP hygiene attacks (issue 12, "smaller ones"): a spoofed Host, more than 100 headers, two
 * Host headers, a connection flood, aborted requests and a flood of random 404s. Each test
 * asserts what the client gets and that the server is still up afterwards.
 */
import { connect, type Socket } from 'node:net';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../common/http.ts';
import { readMetric } from '../../common/metrics.ts';
import type { Logger } from '../../common/log.ts';
import { startEdge, type Edge } from '../../edge/server.ts';
import { startSteering, type Steering } from '../../steering/server.ts';
import { BUCKET, GatedReader, bytes, get, metric, startOrigin, type TestOrigin } from '../edge/helpers.ts';
import { heartbeat, testCatalog } from '../steering/helpers.ts';

interface RawAnswer {
  status: number;
  head: string;
  body: string;
}

/** Sends `request` as written (no client normalises it) and reads the answer until the server closes. */
function raw(port: number, request: string, opts: { localAddress?: string } = {}): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const s = connect({ port, host: '127.0.0.1', localAddress: opts.localAddress });
    const chunks: Buffer[] = [];
    s.on('connect', () => s.write(request));
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('error', reject);
    s.on('close', () => {
      const text = Buffer.concat(chunks).toString('latin1');
      const split = text.indexOf('\r\n\r\n');
      const head = split === -1 ? text : text.slice(0, split);
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0), head, body: split === -1 ? '' : text.slice(split + 4) });
    });
    s.setTimeout(10_000, () => s.destroy(new Error('no answer within 10 s')));
  });
}

const request = (path: string, headers: string[]) => `GET ${path} HTTP/1.1\r\n${[...headers, 'Connection: close'].join('\r\n')}\r\n\r\n`;

function capture(): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  return { log: pino({ level: 'info' }, sink) as unknown as Logger, lines };
}

describe('steering never builds a URL from the Host header', () => {
  let st: Steering;
  let configured: Steering;
  beforeAll(async () => {
    const common = {
      port: 0,
      edgeKey: null,
      tokenSecret: null,
      catalog: testCatalog(2),
      registry: { probeIntervalMs: 0, heartbeatIntervalMs: 60_000, rise: 1 },
    };
    st = await startSteering(common);
    configured = await startSteering({ ...common, publicUrl: 'https://steer.example.net/' });
    for (const s of [st, configured]) s.registry.heartbeat(heartbeat({ id: 'e1', url: 'http://127.0.0.1:9301' }));
  });
  afterAll(async () => {
    await st?.close();
    await configured?.close();
  });

  it('answers every route with its configured or listening URL, whatever Host says', async () => {
    const evil = ['Host: evil.example', 'X-Forwarded-Host: evil.example'];
    for (const [s, base] of [
      [st, st.url],
      [configured, 'https://steer.example.net'],
    ] as const) {
      const master = await raw(s.port, request('/v1/play/title-0001/master.m3u8', evil));
      expect(master.status).toBe(200);
      const serverUri = /SERVER-URI="([^"]+)"/.exec(master.body)?.[1];
      expect(serverUri).toMatch(new RegExp(`^${base.replace(/[.:/]/g, '\\$&')}/v1/steering/[A-Za-z0-9_-]+\\.json$`));
      const manifestPath = new URL(serverUri!).pathname;
      const manifest = await raw(s.port, request(manifestPath, evil));
      expect(manifest.status).toBe(200);
      expect((JSON.parse(manifest.body) as Record<string, unknown>)['RELOAD-URI']).toBe(serverUri);
      const answers = [master, manifest];
      for (const path of ['/v1/steer?title=title-0001', '/v1/edges', '/healthz', '/nope', '/v1/steering/unknown.json'])
        answers.push(await raw(s.port, request(path, evil)));
      for (const a of answers) expect(`${a.head}\n${a.body}`).not.toContain('evil.example');
    }
    expect((await get(`${st.url}/healthz`)).status).toBe(200);
  });
});

describe('request heads: 431 past the header limit, 400 on two Host headers', () => {
  let origin: TestOrigin;
  let edge: Edge;
  let st: Steering;
  const seg = bytes(5_000, 3);
  beforeAll(async () => {
    origin = await startOrigin();
    await origin.put('vod/h/730k/seg-00000.ts', seg);
    edge = await startEdge({ id: 'edge-h', region: 'r', capacityBytes: 10_000_000, origin: origin.reader, tokenSecret: null });
    st = await startSteering({
      port: 0,
      edgeKey: null,
      tokenSecret: null,
      catalog: testCatalog(1),
      registry: { probeIntervalMs: 0, heartbeatIntervalMs: 60_000, rise: 1 },
    });
  });
  afterAll(async () => {
    await edge?.close();
    await st?.close();
    await origin?.close();
  });

  it('refuses a Range header past the 100th header with 431 instead of serving the whole object', async () => {
    const path = '/vod/h/730k/seg-00000.ts';
    const pad = (n: number) => Array.from({ length: n }, (_, i) => `X-Pad-${i}: ${i}`);
    // 100 headers in all, Range the 100th: read, and honoured.
    const within = await raw(edge.port, request(path, ['Host: 127.0.0.1', ...pad(97), 'Range: bytes=0-9']));
    expect(within.status).toBe(206);
    expect(within.head).toMatch(/content-range: bytes 0-9\/5000/i);
    // Range as the 102nd header: refused whole, never served as if it were not there.
    const past = await raw(edge.port, request(path, ['Host: 127.0.0.1', ...pad(100), 'Range: bytes=0-9']));
    expect(past.status).toBe(431);
    expect(JSON.parse(past.body)).toMatchObject({ error: { code: 'E_HEADERS_TOO_LARGE', message: 'more than 100 request headers' } });
    // A head past the byte limit: Node's own 431.
    const huge = await raw(edge.port, request(path, ['Host: 127.0.0.1', `X-Big: ${'a'.repeat(20_000)}`]));
    expect(huge.status).toBe(431);
    expect(await metric(edge, 'ocdn_http_requests_refused_total', { reason: 'too_many_headers' })).toBe(1);
    const steer = await raw(st.port, request('/healthz', ['Host: 127.0.0.1', ...pad(150)]));
    expect(steer.status).toBe(431);
    expect((await get(`${edge.url}/healthz`)).status).toBe(200);
    expect((await get(`${st.url}/healthz`)).status).toBe(200);
  });

  it('never echoes a spoofed Host from the edge either', async () => {
    for (const path of ['/vod/h/730k/seg-00000.ts', '/vod/h/730k/none.ts', '/healthz', '/readyz', '/nope', '/vod/../x'])
      expect(await raw(edge.port, request(path, ['Host: evil.example']))).not.toMatchObject({ head: expect.stringContaining('evil.example') });
    for (const path of ['/vod/h/730k/none.ts', '/nope'])
      expect((await raw(edge.port, request(path, ['Host: evil.example']))).body).not.toContain('evil.example');
  });

  it('refuses two Host headers with 400 (RFC 9112 §3.2)', async () => {
    for (const [port, path] of [
      [edge.port, '/vod/h/730k/seg-00000.ts'],
      [st.port, '/healthz'],
    ] as const) {
      const twice = await raw(port, request(path, ['Host: 127.0.0.1', 'Host: evil.example']));
      expect(twice.status).toBe(400);
      expect(JSON.parse(twice.body)).toMatchObject({ error: { code: 'E_BAD_REQUEST', message: expect.stringMatching(/more than one Host header/) } });
      expect((await raw(port, request(path, ['Host: 127.0.0.1']))).status).toBe(200);
    }
    expect(await metric(edge, 'ocdn_http_requests_refused_total', { reason: 'duplicate_host' })).toBe(1);
    expect(readMetric(await st.metrics.metrics(), 'ocdn_http_requests_refused_total', { reason: 'duplicate_host' })).toBe(1);
  });
});

/** Opens `n` idle connections from `localAddress`; resolves once each is either held open or closed by the server. */
async function flood(port: number, n: number, localAddress: string): Promise<Socket[]> {
  const held: Socket[] = [];
  let settled = 0;
  for (let i = 0; i < n; i++) {
    const s = connect({ port, host: '127.0.0.1', localAddress });
    s.on('error', () => {});
    s.once('close', () => settled++);
    held.push(s);
    // A few hundred at a time: the listen backlog is not what is being tested.
    if (i % 250 === 249) await waitFor(() => held.filter((x) => x.readyState === 'open' || x.destroyed).length === held.length, { timeoutMs: 10_000 });
  }
  await waitFor(() => held.every((x) => x.readyState === 'open' || x.destroyed), { timeoutMs: 10_000 });
  void settled;
  return held;
}

describe('connection flood against a cap with a per-client share', () => {
  let origin: TestOrigin;
  let edge: Edge;
  let st: Steering;
  const edgeLog = capture();
  const stLog = capture();
  const sockets: Socket[] = [];
  beforeAll(async () => {
    origin = await startOrigin();
    await origin.put('vod/f/730k/seg-00000.ts', bytes(2_000, 4));
    edge = await startEdge({
      id: 'edge-f',
      region: 'r',
      capacityBytes: 10_000_000,
      origin: origin.reader,
      tokenSecret: null,
      log: edgeLog.log,
      limits: { maxConnections: 200, perClientShare: 0.25 },
    });
    st = await startSteering({
      port: 0,
      edgeKey: null,
      tokenSecret: null,
      catalog: testCatalog(1),
      registry: { probeIntervalMs: 0, heartbeatIntervalMs: 60_000, rise: 1 },
      log: stLog.log,
      limits: { maxConnections: 20, perClientShare: 1 },
    });
  });
  afterAll(async () => {
    for (const s of sockets) s.destroy();
    await edge?.close();
    await st?.close();
    await origin?.close();
  });

  it('3000 idle sockets from one address hold only its share; another client is served; one log line', async () => {
    sockets.push(...(await flood(edge.port, 3_000, '127.0.0.1')));
    await waitFor(async () => (await metric(edge, 'ocdn_http_connections_refused_total', { reason: 'per_client' })) === 3_000 - 50, { timeoutMs: 10_000 });
    expect(await metric(edge, 'ocdn_http_connections_open')).toBe(50);
    expect(sockets.filter((s) => !s.destroyed)).toHaveLength(50);
    // A well-behaved client from another address is served at once, on a fresh connection.
    const legit = await raw(edge.port, request('/vod/f/730k/seg-00000.ts', ['Host: 127.0.0.1']), { localAddress: '127.0.0.2' });
    expect(legit.status).toBe(200);
    expect(legit.body).toHaveLength(2_000);
    const warns = edgeLog.lines.filter((l) => l.msg?.toString().startsWith('connection refused'));
    expect(warns).toHaveLength(1);
    expect(warns[0]).toMatchObject({ level: 40, reason: 'per_client', remote: '127.0.0.1', maxConnections: 200, perClient: 50 });
    // 127.0.0.1 is at its share: the health check comes from elsewhere too.
    expect((await raw(edge.port, request('/healthz', ['Host: 127.0.0.1']), { localAddress: '127.0.0.2' })).status).toBe(200);
  });

  it('past the cap a connection is dropped, counted and logged once; freed room serves again', async () => {
    const idle = await flood(st.port, 20, '127.0.0.1');
    sockets.push(...idle);
    expect(idle.filter((s) => !s.destroyed)).toHaveLength(20);
    const extra = await flood(st.port, 30, '127.0.0.3');
    sockets.push(...extra);
    await waitFor(() => extra.every((s) => s.destroyed), { timeoutMs: 10_000 });
    for (const s of idle) s.destroy();
    await waitFor(async () => readMetric(await st.metrics.metrics(), 'ocdn_http_connections_open') === 0, { timeoutMs: 10_000 });
    const text = await st.metrics.metrics();
    expect(readMetric(text, 'ocdn_http_connections_refused_total', { reason: 'cap' })).toBe(30);
    expect(stLog.lines.filter((l) => l.msg?.toString().startsWith('connection refused'))).toHaveLength(1);
    expect((await raw(st.port, request('/healthz', ['Host: 127.0.0.1']), { localAddress: '127.0.0.3' })).status).toBe(200);
  });
});

describe('aborted requests are counted and bytes are what left the socket', () => {
  let origin: TestOrigin;
  let gated: GatedReader;
  let slow: Edge;
  let big: Edge;
  const slowLog = capture();
  const large = bytes(40 * 1024 * 1024, 5);
  beforeAll(async () => {
    origin = await startOrigin();
    await origin.put('vod/a/730k/seg-00000.ts', bytes(50_000, 6));
    await origin.put('vod/a/730k/big.ts', large);
    gated = new GatedReader({ client: origin.client, bucket: BUCKET, timeoutMs: 10_000, retries: 0 });
    slow = await startEdge({ id: 'edge-a', region: 'r', capacityBytes: 10_000_000, origin: gated, tokenSecret: null, log: slowLog.log });
    big = await startEdge({ id: 'edge-b', region: 'r', capacityBytes: 200 * 1024 * 1024, origin: origin.reader, tokenSecret: null });
  });
  afterAll(async () => {
    gated?.release();
    await slow?.close();
    await big?.close();
    await origin?.close();
  });

  it('a client that leaves before the answer is a 499 in requests_total and the access log', async () => {
    const clients = Array.from({ length: 10 }, () => {
      const s = connect({ port: slow.port, host: '127.0.0.1' });
      s.on('error', () => {});
      s.write(request('/vod/a/730k/seg-00000.ts', ['Host: 127.0.0.1']));
      return s;
    });
    await waitFor(() => slow.inFlight === 10, { timeoutMs: 10_000 });
    for (const c of clients) c.destroy();
    await waitFor(() => slow.inFlight === 0, { timeoutMs: 10_000 });
    gated.release();
    await waitFor(async () => (await metric(slow, 'ocdn_edge_requests_total', { status: '499' })) === 10, { timeoutMs: 10_000 });
    expect(await metric(slow, 'ocdn_edge_requests_total', { cache: 'MISS', status: '499' })).toBe(1);
    expect(await metric(slow, 'ocdn_edge_requests_total', { cache: 'COALESCED', status: '499' })).toBe(9);
    const lines = slowLog.lines.filter((l) => l.msg === 'request' && l.status === 499);
    expect(lines).toHaveLength(10);
    expect(lines[0]).toMatchObject({ path: '/vod/a/730k/seg-00000.ts', bytes: 0, detail: expect.stringMatching(/client closed/) });
    // The fill still completed: the next request is a hit.
    expect((await get(`${slow.url}/vod/a/730k/seg-00000.ts`)).headers['x-cache']).toBe('HIT');
  });

  it('bytes_served_total counts what the kernel took, not the 40 MB body a client gave up on', async () => {
    const url = `${big.url}/vod/a/730k/big.ts`;
    expect((await get(url)).body.length).toBe(large.length);
    // The client has it all; the edge learns its last write completed a moment later.
    const before = await waitFor(async () => {
      const v = await metric(big, 'ocdn_edge_bytes_served_total');
      return v >= large.length ? v : undefined;
    });
    let read = 0;
    await new Promise<void>((resolve) => {
      const s = connect({ port: big.port, host: '127.0.0.1' });
      s.on('error', () => {});
      s.on('close', () => resolve());
      s.write(request('/vod/a/730k/big.ts', ['Host: 127.0.0.1']));
      s.on('data', (c: Buffer) => {
        read += c.length;
        if (read >= 1_000_000) {
          s.pause();
          s.destroy();
        }
      });
    });
    await waitFor(async () => (await metric(big, 'ocdn_http_connections_open')) === 0, { timeoutMs: 10_000 });
    const counted = (await metric(big, 'ocdn_edge_bytes_served_total')) - before;
    // At least what the client read; at most that plus the kernel's socket buffers on both
    // sides (a few MB on loopback). Counting the body length would give 40 MB.
    expect(counted).toBeGreaterThanOrEqual(read);
    expect(counted).toBeLessThan(read + 12 * 1024 * 1024);
    expect(counted).toBeLessThan(large.length / 2);
    expect((await get(`${big.url}/healthz`)).status).toBe(200);
  });
});

describe('negative entries: capped apart from objects, gone on time', () => {
  let origin: TestOrigin;
  let edge: Edge;
  const real = bytes(100_000, 9);
  beforeAll(async () => {
    origin = await startOrigin();
    await origin.put('vod/n/730k/seg-00000.ts', real);
    edge = await startEdge({
      id: 'edge-n',
      region: 'r',
      // Before: 3000 negatives of 512 bytes each would fill this cache and evict the object.
      capacityBytes: 1_000_000,
      origin: origin.reader,
      tokenSecret: null,
      negativeTtlMs: 1_000,
      negativeMaxEntries: 100,
    });
  });
  afterAll(async () => {
    await edge?.close();
    await origin?.close();
  });

  it('3000 random 404 paths leave at most the cap, none after the TTL, and the real object stays cached', async () => {
    const path = '/vod/n/730k/seg-00000.ts';
    expect((await get(`${edge.url}${path}`)).headers['x-cache']).toBe('MISS');
    let maxNegatives = 0;
    for (let batch = 0; batch < 3_000; batch += 50) {
      const answers = await Promise.all(
        Array.from({ length: 50 }, (_, i) => get(`${edge.url}/vod/n/730k/missing-${batch + i}-${Math.random().toString(36).slice(2)}.ts`)),
      );
      for (const a of answers) expect(a.status).toBe(404);
      maxNegatives = Math.max(maxNegatives, edge.cache.negativeItems);
    }
    expect(maxNegatives).toBeLessThanOrEqual(100);
    expect(await metric(edge, 'ocdn_edge_cache_evictions_total')).toBe(0);
    const hit = await get(`${edge.url}${path}`);
    expect(hit.headers['x-cache']).toBe('HIT');
    expect(hit.body.equals(real)).toBe(true);
    await waitFor(() => edge.cache.negativeItems === 0, { timeoutMs: 5_000 });
    expect(await metric(edge, 'ocdn_edge_cache_negative_items')).toBe(0);
    expect(edge.cache.items).toBe(1);
    expect((await get(`${edge.url}${path}`)).headers['x-cache']).toBe('HIT');
  });
});

/**
 * Streaming storage: a miss reaches its client while upstream is still sending, coalesced requests
 * (late ones too) get the same bytes, a body that fails its hash is cut and never stored; objects
 * too large for RAM are streamed from disk (whole and by Range), a file torn behind the edge's back
 * is caught while read and deleted, and a stale disk copy answers when upstream fails.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, open, rm, stat, truncate } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../common/http.ts';
import { type Edge, type EdgeOptions, startEdge } from '../../edge/server.ts';
import { bytes, get, metric, sha256, startOrigin, type TestOrigin } from './helpers.ts';

const fileOf = (dir: string, key: string) => join(dir, `${createHash('sha256').update(key).digest('hex')}.obj`);

/**
 * A parent tier the test drives: each GET answers 200 with Content-Length and an ETag (the body's
 * hash unless `lie`), sends the first `first` bytes, and the rest only once release() is called.
 */
class DrippingParent {
  server!: Server;
  url = '';
  gets = 0;
  first = 64 * 1024;
  lie = false;
  down = false;
  private readonly objects = new Map<string, Buffer>();
  private open!: () => void;
  private gate = new Promise<void>((r) => (this.open = r));

  put(path: string, body: Buffer): Buffer {
    this.objects.set(path, body);
    return body;
  }

  release(): void {
    this.open();
  }

  hold(): void {
    this.gate = new Promise<void>((r) => (this.open = r));
  }

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      const body = this.objects.get(req.url ?? '');
      if (req.url === '/healthz') return void res.end('{}');
      this.gets++;
      if (this.down) return void res.writeHead(503).end('down');
      if (body === undefined) return void res.writeHead(404).end('{}');
      const etag = this.lie ? sha256(Buffer.from('something else')) : sha256(body);
      res.writeHead(200, { 'content-length': body.length, etag: `"${etag}"`, 'content-type': 'video/mp2t' });
      const first = this.first;
      res.write(body.subarray(0, first));
      void this.gate.then(() => res.end(body.subarray(first)));
    });
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async close(): Promise<void> {
    this.release();
    this.server.closeAllConnections();
    await new Promise((r) => this.server.close(r));
  }
}

const agent = new Agent({ connections: 32 });

/** A GET read as it comes: `received` grows while the edge is still filling. */
function streamGet(url: string, headers: Record<string, string> = {}) {
  const state = { received: 0, status: 0, headers: {} as Record<string, string | string[] | undefined> };
  const done = (async () => {
    const res = await request(url, { dispatcher: agent, headers });
    state.status = res.statusCode;
    state.headers = res.headers;
    const chunks: Buffer[] = [];
    for await (const c of res.body) {
      chunks.push(c as Buffer);
      state.received += (c as Buffer).length;
    }
    return Buffer.concat(chunks);
  })();
  done.catch(() => undefined);
  return { state, done };
}

describe('streaming storage', () => {
  let parent: DrippingParent;
  let origin: TestOrigin;
  let dir: string;
  const edges: Edge[] = [];
  const edge = async (o: Partial<EdgeOptions>) => {
    const e = await startEdge({ id: 'edge-s', region: 'r', capacityBytes: 50_000_000, tokenSecret: null, ...o } as EdgeOptions);
    edges.push(e);
    return e;
  };

  beforeAll(async () => {
    parent = new DrippingParent();
    await parent.start();
    origin = await startOrigin();
    dir = await mkdtemp(join(tmpdir(), 'ocdn-stream-'));
  });

  afterAll(async () => {
    await Promise.all(edges.map((e) => e.close()));
    await parent?.close();
    await origin?.close();
    await agent.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('a miss delivers its first bytes while upstream is still sending; joiners get identical bytes from one upstream GET', async () => {
    const path = '/vod/slow/r/seg-00000.ts';
    const body = parent.put(path, bytes(600_000, 11));
    parent.hold();
    const before = parent.gets;
    const e = await edge({ parentUrl: parent.url });
    const first = streamGet(`${e.url}${path}`);
    // Bytes reach the client while the parent holds back all but its first 64 KB.
    await waitFor(() => first.state.received > 0, { timeoutMs: 10_000, what: 'first bytes of the miss' });
    expect(first.state.received).toBeLessThan(body.length);
    expect(first.state.headers['x-cache']).toBe('MISS');
    expect(first.state.headers['content-length']).toBe(String(body.length));
    expect(first.state.headers.etag).toBe(`"${sha256(body)}"`);
    // Late joiners: the fill is under way; they get what came so far, then follow.
    const late = [streamGet(`${e.url}${path}`), streamGet(`${e.url}${path}`)];
    await waitFor(() => late.every((l) => l.state.received > 0), { timeoutMs: 10_000, what: 'joiners served what came so far' });
    parent.release();
    const bodies = await Promise.all([first.done, ...late.map((l) => l.done)]);
    for (const b of bodies) expect(sha256(b)).toBe(sha256(body));
    expect(late.map((l) => l.state.headers['x-cache'])).toEqual(['COALESCED', 'COALESCED']);
    expect(parent.gets - before).toBe(1);
    expect((await get(`${e.url}${path}`)).headers['x-cache']).toBe('HIT');
  });

  it('a body that fails its declared hash is cut short of its Content-Length and stored nowhere', async () => {
    const path = '/vod/liar/r/seg-00000.ts';
    const body = parent.put(path, bytes(300_000, 12));
    parent.release();
    parent.lie = true;
    try {
      const e = await edge({ id: 'edge-liar', parentUrl: parent.url, disk: { dir: join(dir, 'liar'), capacityBytes: 16_000_000 } });
      const r = streamGet(`${e.url}${path}`);
      const got = await r.done.then(
        (b) => b.length,
        () => -1,
      );
      expect(r.state.status).toBe(200);
      // Either the read failed outright or it ended short: never the whole body.
      expect(got).toBeLessThan(body.length);
      await e.disk!.idle();
      expect(e.cache.has(path)).toBe(false);
      expect(e.disk!.items).toBe(0);
      await waitFor(async () => (await metric(e, 'ocdn_edge_origin_fetches_total', { upstream: 'parent', result: 'error' })) === 1, {
        timeoutMs: 5_000,
        what: 'the fill counted as failed',
      });
    } finally {
      parent.lie = false;
    }
  });

  it('a late request for a large body passed through (not kept) waits for the fill and is served from disk, one upstream GET', async () => {
    const path = '/vod/large-late/r/seg-00000.ts';
    const body = parent.put(path, bytes(2_000_000, 13));
    parent.hold();
    const before = parent.gets;
    const e = await edge({ id: 'edge-late', parentUrl: parent.url, capacityBytes: 1_000_000, disk: { dir: join(dir, 'late'), capacityBytes: 64_000_000 } });
    parent.first = 1_000_000;
    const first = streamGet(`${e.url}${path}`);
    // Past the window: the start of the body is released, a new reader cannot start from byte 0.
    await waitFor(() => first.state.received > 600_000, { timeoutMs: 10_000, what: 'first bytes' });
    parent.first = 64 * 1024;
    const late = streamGet(`${e.url}${path}`);
    await waitFor(() => e.inFlight === 2, { timeoutMs: 10_000, what: 'the late request waiting' });
    parent.release();
    expect(sha256(await first.done)).toBe(sha256(body));
    expect(sha256(await late.done)).toBe(sha256(body));
    expect(late.state.headers['cache-status']).toBe('ocdn-edge-late; hit; detail=disk');
    expect(parent.gets - before).toBe(1);
  });

  it('serves an object too large for RAM from disk by stream, whole and by Range, never promoting it', async () => {
    const key = '/vod/large/r/seg-00000.ts';
    const body = await origin.put(key.slice(1), bytes(3_000_000, 14));
    const e = await edge({ id: 'edge-large', origin: origin.reader, capacityBytes: 1_000_000, disk: { dir: join(dir, 'large'), capacityBytes: 64_000_000 } });
    const miss = await get(`${e.url}${key}`);
    expect([miss.status, miss.headers['x-cache'], sha256(miss.body)]).toEqual([200, 'MISS', sha256(body)]);
    expect(miss.headers['cache-status']).toBe('ocdn-edge-large; fwd=miss; stored');
    await e.disk!.idle();
    for (let i = 0; i < 2; i++) {
      const hit = await get(`${e.url}${key}`);
      expect([hit.status, hit.headers['cache-status'], hit.headers['content-length']]).toEqual([200, 'ocdn-edge-large; hit; detail=disk', String(body.length)]);
      expect(hit.body.equals(body)).toBe(true);
    }
    const mid = await get(`${e.url}${key}`, { range: 'bytes=1000000-1999999' });
    expect([mid.status, mid.headers['content-range']]).toEqual([206, `bytes 1000000-1999999/${body.length}`]);
    expect(mid.body.equals(body.subarray(1_000_000, 2_000_000))).toBe(true);
    const tail = await get(`${e.url}${key}`, { range: 'bytes=-100' });
    expect(tail.status).toBe(206);
    expect(tail.body.equals(body.subarray(body.length - 100))).toBe(true);
    const past = await get(`${e.url}${key}`, { range: `bytes=${body.length}-` });
    expect(past.status).toBe(416);
    expect(e.cache.has(key)).toBe(false);
    expect(await metric(e, 'ocdn_edge_origin_fetches_total', { result: 'ok' })).toBe(1);
    expect(await metric(e, 'ocdn_edge_disk_hits_total')).toBe(5);
  });

  it('a file torn behind the edge (a byte flipped, or truncated) is caught while read: that response is cut, the file deleted, the next request refetched', async () => {
    const e = await edge({ id: 'edge-torn', origin: origin.reader, capacityBytes: 1_000_000, disk: { dir: join(dir, 'torn'), capacityBytes: 64_000_000 } });
    const keys = ['/vod/torn/r/seg-00000.ts', '/vod/torn/r/seg-00001.ts'];
    const bodies = await Promise.all(keys.map((k, i) => origin.put(k.slice(1), bytes(700_000, 20 + i))));
    for (const k of keys) expect((await get(`${e.url}${k}`)).status).toBe(200);
    await e.disk!.idle();
    expect(e.disk!.items).toBe(2);
    // One file keeps its length with a byte changed; the other is cut in half after one good read.
    const flipped = fileOf(join(dir, 'torn'), keys[0]!);
    const fh = await open(flipped, 'r+');
    const at = (await stat(flipped)).size - 1_000;
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, at);
    b[0] = b[0]! ^ 0xff;
    await fh.write(b, 0, 1, at);
    await fh.close();
    expect((await get(`${e.url}${keys[1]}`)).headers['cache-status']).toBe('ocdn-edge-torn; hit; detail=disk');
    const cut = fileOf(join(dir, 'torn'), keys[1]!);
    await truncate(cut, Math.floor((await stat(cut)).size / 2));

    for (const [i, k] of keys.entries()) {
      const r = streamGet(`${e.url}${k}`);
      const got = await r.done.then(
        (x) => x,
        () => undefined,
      );
      expect(r.state.headers['cache-status'], k).toBe('ocdn-edge-torn; hit; detail=disk');
      // The client never gets a complete body: it fails, or ends short.
      expect(got === undefined || got.length < bodies[i]!.length, k).toBe(true);
    }
    expect(e.disk!.items).toBe(0);
    expect(await metric(e, 'ocdn_edge_disk_torn_total')).toBe(2);
    for (const [i, k] of keys.entries()) {
      const r = await get(`${e.url}${k}`);
      expect([r.status, r.headers['x-cache']]).toEqual([200, 'MISS']);
      expect(r.body.equals(bodies[i]!)).toBe(true);
    }
  });

  it('a stale disk copy answers stale-if-error when upstream fails and RAM holds nothing', async () => {
    const path = '/vod/stale/r/seg-00000.ts';
    const body = parent.put(path, bytes(500_000, 30));
    parent.release();
    const e = await edge({
      id: 'edge-stale',
      parentUrl: parent.url,
      capacityBytes: 1_000_000,
      segmentTtlMs: 1,
      disk: { dir: join(dir, 'stale'), capacityBytes: 64_000_000 },
    });
    expect((await get(`${e.url}${path}`)).headers['x-cache']).toBe('MISS');
    await e.disk!.idle();
    const freshUntil = Date.now() + 5;
    await waitFor(() => Date.now() > freshUntil, { timeoutMs: 1_000, what: 'the copy expired' });
    expect(e.cache.has(path)).toBe(false);
    parent.down = true;
    try {
      const r = await get(`${e.url}${path}`);
      expect([r.status, r.headers['x-cache'], r.headers['cache-status']]).toEqual([200, 'STALE', 'ocdn-edge-stale; fwd=stale; detail=stale-if-error']);
      expect(r.body.equals(body)).toBe(true);
    } finally {
      parent.down = false;
    }
  });
});

import { createServer, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../common/http.ts';
import { OriginReader } from '../../origin/reader.ts';
import { EMBEDDED_CREDENTIALS } from '../../origin/s3-config.ts';
import { createS3Client } from '../../origin/s3-client.ts';
import { startEdge, type Edge } from '../../edge/server.ts';
import { BUCKET, bytes, get, metric, startOrigin, type TestOrigin } from './helpers.ts';
import { expectErrorBody } from '../error-body.ts';
import { TEST_EDGE_KEY } from '../steering/helpers.ts';

describe('upstream failures', () => {
  let origin: TestOrigin;
  let edge: Edge;
  const a = bytes(50_000, 1);
  const b = bytes(60_000, 2);

  beforeAll(async () => {
    origin = await startOrigin({ readerTimeoutMs: 2_000 });
    await origin.put('vod/t/r/seg-00000.ts', a);
    await origin.put('vod/t/r/seg-00001.ts', b);
    await origin.put('vod/t/r/index.m3u8', '#EXTM3U\n');
    await origin.put('vod/t/r/seg-00002.ts', bytes(10, 3));
    // Segments expire after 300 ms so a stale copy exists once the origin is gone.
    edge = await startEdge({
      edgeKey: TEST_EDGE_KEY,
      id: 'edge-f',
      region: 'r',
      capacityBytes: 10_000_000,
      origin: origin.reader,
      tokenSecret: null,
      segmentTtlMs: 300,
      playlistTtlMs: 60_000,
    });
  });

  afterAll(async () => {
    await edge?.close();
    await origin?.close();
  });

  it('origin stopped: stale for expired cached keys, hit for fresh ones, 502 for the rest, and the edge keeps running', async () => {
    const segA = `${edge.url}/vod/t/r/seg-00000.ts`;
    const playlist = `${edge.url}/vod/t/r/index.m3u8`;
    expect((await get(segA)).headers['x-cache']).toBe('MISS');
    expect((await get(playlist)).headers['x-cache']).toBe('MISS');

    await origin.stop();
    await waitFor(() => edge.cache.fresh('/vod/t/r/seg-00000.ts') === undefined, { timeoutMs: 10_000, what: 'segment to expire' });

    const stale = await get(segA);
    expect(stale.status).toBe(200);
    expect(stale.headers['x-cache']).toBe('STALE');
    expect(stale.headers['cache-status']).toBe('ocdn-edge-f; fwd=stale; detail=stale-if-error');
    expect(stale.body.equals(a)).toBe(true);

    const fresh = await get(playlist);
    expect(fresh.status).toBe(200);
    expect(fresh.headers['x-cache']).toBe('HIT');

    const never = await get(`${edge.url}/vod/t/r/seg-00001.ts`);
    expect(never.status).toBe(502);
    expectErrorBody(never.body, 'E_ORIGIN_UNAVAILABLE', /seg-00001\.ts/);
    expect(never.headers['cache-status']).toBe('ocdn-edge-f; fwd=miss; detail=upstream-error');

    // Still stale (the failed refresh put the old copy back), and still serving.
    const again = await get(segA);
    expect(again.headers['x-cache']).toBe('STALE');
    expect(again.body.equals(a)).toBe(true);
    expect((await get(`${edge.url}/healthz`)).status).toBe(200);
    const ready = await get(`${edge.url}/readyz`);
    expect(ready.status).toBe(503);
    expect(JSON.parse(ready.body.toString()).reason).toMatch(/origin unreachable/);
    expect(await metric(edge, 'ocdn_edge_origin_fetches_total', { result: 'error' })).toBeGreaterThanOrEqual(3);
    expect(await metric(edge, 'ocdn_edge_requests_total', { cache: 'STALE', status: '200' })).toBe(2);
  });
});

describe('upstream timeouts', () => {
  let blackhole: Server;
  const sockets = new Set<Socket>();
  let edge: Edge;
  let client: ReturnType<typeof createS3Client>;

  beforeAll(async () => {
    // Accepts connections and never answers: what a wedged origin looks like.
    blackhole = createServer((s) => {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => undefined);
    });
    await new Promise<void>((r) => blackhole.listen(0, '127.0.0.1', r));
    const port = (blackhole.address() as { port: number }).port;
    client = createS3Client(
      { s3Endpoint: `http://127.0.0.1:${port}`, s3Region: 'us-east-1', forcePathStyle: true, ...EMBEDDED_CREDENTIALS },
      { maxAttempts: 1 },
    );
    const reader = new OriginReader({ client, bucket: BUCKET, timeoutMs: 300, retries: 0 });
    edge = await startEdge({ edgeKey: TEST_EDGE_KEY, id: 'edge-t', region: 'r', capacityBytes: 1_000_000, origin: reader, tokenSecret: null });
  });

  afterAll(async () => {
    await edge?.close();
    client?.destroy();
    for (const s of sockets) s.destroy();
    await new Promise((r) => blackhole?.close(r));
  });

  it('answers 504 with a one-line reason when the origin times out, and is not wedged by it', async () => {
    const [r1, r2] = await Promise.all([get(`${edge.url}/vod/t/r/seg-00000.ts`), get(`${edge.url}/vod/t/r/seg-00000.ts`)]);
    for (const r of [r1!, r2!]) {
      expect(r.status).toBe(504);
      expectErrorBody(r.body, 'E_ORIGIN_TIMEOUT', /^origin timed out after 300 ms/);
    }
    // One upstream attempt for both (coalesced), counted as a timeout.
    expect(await metric(edge, 'ocdn_edge_origin_fetches_total', { result: 'timeout' })).toBe(1);
    expect((await get(`${edge.url}/healthz`)).status).toBe(200);
    expect((await get(`${edge.url}/vod/t/r/seg-00001.ts`)).status).toBe(504);
  });
});

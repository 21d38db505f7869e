import { createServer, type Server } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { type EdgeHeartbeat, HEARTBEAT_LIMITS } from '../../common/contracts.ts';
import { closeServer, listen, waitFor } from '../../common/http.ts';
import { createLogger } from '../../common/log.ts';
import { boundedBody, Heartbeat } from '../../edge/heartbeat.ts';

const beat = (): EdgeHeartbeat =>
  ({
    id: 'e1',
    url: 'http://127.0.0.1:1',
    region: 'r',
    capacityBytes: 1,
    usedBytes: 0,
    healthy: true,
    titles: [],
    inFlight: 0,
    rps: 0,
    egressBps: 0,
    ts: 0,
  }) as EdgeHeartbeat;

/** A steering stand-in answering each heartbeat POST with the next status of `statuses` (then 204). */
async function steering(statuses: number[]): Promise<{ url: string; posts: () => number; server: Server }> {
  let posts = 0;
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      const status = statuses[posts++] ?? 204;
      res.writeHead(status, status === 503 ? { 'retry-after': '0' } : {}).end();
    });
  });
  const port = await listen(server, 0);
  return { url: `http://127.0.0.1:${port}`, posts: () => posts, server };
}

describe('heartbeat retries', () => {
  let hb: Heartbeat | undefined;
  let server: Server | undefined;
  afterEach(async () => {
    await hb?.stop();
    if (server) await closeServer(server, 0);
  });

  it('a beat refused with 503 is sent again within its interval and counts once', async () => {
    const s = await steering([503, 502]);
    server = s.server;
    // A long interval: only the first beat (and its retries) can reach the stub.
    hb = new Heartbeat({ steeringUrls: [s.url], intervalMs: 60_000, build: beat, log: createLogger('test') });
    hb.start();
    await waitFor(() => hb!.sent === 1, { what: 'the beat delivered' });
    expect(s.posts()).toBe(3);
  });

  it('a 400 is not retried: steering refused the beat itself', async () => {
    const s = await steering([400]);
    server = s.server;
    hb = new Heartbeat({ steeringUrls: [s.url], intervalMs: 60_000, build: beat, log: createLogger('test') });
    hb.start();
    await waitFor(() => s.posts() === 1, { what: 'one POST' });
    await hb.stop();
    expect(s.posts()).toBe(1);
    expect(hb.sent).toBe(0);
  });
});

describe('heartbeat body bounds', () => {
  it("cuts the inventory to steering's limits rather than being refused", () => {
    const many = Array.from({ length: 10_000 }, (_, i) => `title-${String(i).padStart(100, '0')}`);
    const text = boundedBody({ ...beat(), titles: ['bad title/../x', ...many] });
    const sent = JSON.parse(text) as EdgeHeartbeat;
    expect(Buffer.byteLength(text)).toBeLessThanOrEqual(HEARTBEAT_LIMITS.maxBodyBytes);
    expect(sent.titles.length).toBeGreaterThan(1_000);
    expect(sent.titles.length).toBeLessThanOrEqual(HEARTBEAT_LIMITS.maxTitles);
    expect(sent.titles).toEqual(many.slice(0, sent.titles.length));
    expect(boundedBody({ ...beat(), titles: ['a', 'b'] })).toBe(JSON.stringify({ ...beat(), titles: ['a', 'b'] }));
  });
});

import { createServer, type Server } from 'node:http';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { contentKeys } from '../../common/contracts.ts';
import { closeServer, listen } from '../../common/http.ts';
import { parseCmcd } from '../../edge/cmcd.ts';
import { queryArg } from '../../edge/path.ts';
import { segmentSizes } from '../../origin/synthetic.ts';
import type { QoeEvent } from '../../telemetry/events.ts';
import { RealClock } from '../../player-sim/clock.ts';
import { MemorySink } from '../../player-sim/sinks.ts';
import { parseTraceSpec } from '../../player-sim/network.ts';
import { runPlayers } from '../../player-sim/runner.ts';
import { TokenBucket } from '../../player-sim/throttle.ts';
import { createPlayerAgent, HttpTransport } from '../../player-sim/transport-http.ts';
import { startTestCdn, type TestCdn } from './helpers.ts';

const TITLE_SEC = 40;
let cdn: TestCdn;

beforeAll(async () => {
  cdn = await startTestCdn({ titles: 2, durationSec: TITLE_SEC, ladder: 'small', edges: ['edge-a', 'edge-b'] });
});
afterAll(async () => {
  await cdn?.close();
});

function sizes(rendition: string, bitrate: number): number[] {
  return segmentSizes({ title: 'title-0001', rendition, bitrate, durationSec: TITLE_SEC, segmentSec: 4 });
}

/** Index of the segment whose size is closest to `target` bytes. */
function closest(list: number[], target: number): number {
  return list.reduce((best, s, i) => (Math.abs(s - target) < Math.abs(list[best]! - target) ? i : best), 0);
}

describe('real sockets through an edge', () => {
  it('transfer times match the closed form within 10% (constant 1 and 5 Mbps; step 6→1 Mbps)', async () => {
    const agent = createPlayerAgent();
    try {
      const seg = (rendition: string, i: number) => `${cdn.edges[0]!.url}/vod/title-0001/${rendition}/seg-${String(i).padStart(5, '0')}.ts`;
      const s1100 = sizes('1100k', 1_100_000);
      const s3000 = sizes('3000k', 3_000_000);
      const constIdx = closest(s1100, 550_000); // ≈ 4.4 s at 1 Mbps
      const stepIdx = closest(s3000, 1_000_000); // ≈ 1 s at 6 Mbps, then ≈ 2 s at 1 Mbps
      const fiveIdx = closest(s3000, 1_900_000); // ≈ 3 s at 5 Mbps
      // Warm the edge so TTFB is a cache hit, not an S3 round trip.
      for (const u of [seg('1100k', constIdx), seg('3000k', stepIdx), seg('3000k', fiveIdx)])
        await (await request(u, { dispatcher: agent })).body.arrayBuffer();

      const rtt = 20;
      const measure = async (spec: string, url: string) => {
        const clock = new RealClock(1);
        const trace = parseTraceSpec(spec, { seed: 1 })('s');
        const transport = new HttpTransport({ agent, clock, bucket: new TokenBucket(clock, trace, clock.now()), rttMs: rtt });
        const r = await transport.fetch({ url, kind: 'segment', timeoutMs: 5_000 });
        expect(r.status).toBe(200);
        return r;
      };
      const [c, s, f] = await Promise.all([
        measure('const:1mbps', seg('1100k', constIdx)),
        measure('step:6mbps,1mbps@1s', seg('3000k', stepIdx)),
        measure('const:5mbps', seg('3000k', fiveIdx)),
      ]);

      expect(f.bytes).toBe(s3000[fiveIdx]);
      const fiveClosed = rtt + (f.bytes * 8 * 1000) / 5e6;
      expect(fiveClosed).toBeGreaterThan(2_000);
      expect(Math.abs(f.totalMs - fiveClosed) / fiveClosed).toBeLessThan(0.1);

      expect(c.bytes).toBe(s1100[constIdx]);
      const constClosed = rtt + (c.bytes * 8 * 1000) / 1e6;
      expect(constClosed).toBeGreaterThan(3_000);
      expect(Math.abs(c.totalMs - constClosed) / constClosed).toBeLessThan(0.1);

      expect(s.bytes).toBe(s3000[stepIdx]);
      // from the first byte (measured TTFB): 6 Mbps until t = 1 s, then 1 Mbps
      const before = (6e6 * Math.max(0, 1_000 - s.ttfbMs)) / 1000 / 8;
      const stepClosed = before >= s.bytes ? s.ttfbMs + (s.bytes * 8 * 1000) / 6e6 : 1_000 + ((s.bytes - before) * 8 * 1000) / 1e6;
      expect(stepClosed).toBeGreaterThan(2_000);
      expect(Math.abs(s.totalMs - stepClosed) / stepClosed).toBeLessThan(0.1);
    } finally {
      await agent.close();
    }
  });

  it('plays real sessions: events, CMCD-tagged requests, X-Cache per edge', async () => {
    // Warm the title with plain requests first. Players started together stay in lockstep, so
    // without this every request could be a MISS or COALESCED depending on how slow S3 is that
    // day; warmed, every CMCD-tagged request (each with its own sid) must be a HIT.
    const edge = cdn.edges[1]!;
    const title = cdn.catalog.titles.find((t) => t.id === 'title-0002')!;
    const keys = [contentKeys.master(title.id)];
    for (const r of title.renditions) {
      keys.push(contentKeys.media(title.id, r.name));
      for (let i = 0; i < title.segments; i++) keys.push(contentKeys.segment(title.id, r.name, i));
    }
    for (const k of keys) {
      const res = await request(`${edge.url}/${k}`);
      await res.body.arrayBuffer();
      expect(res.statusCode, k).toBe(200);
    }
    const sink = new MemorySink();
    const urls: string[] = [];
    const { sessions, summary } = await runPlayers({
      wrapTransport: (t) => ({ fetch: (r) => (urls.push(r.url), t.fetch(r)) }),
      edges: [cdn.edges[1]!.url],
      players: 4,
      rampMs: 1_000,
      durationMs: 60_000,
      loop: false,
      speed: 4,
      // Timeouts are session time (÷ speed in real time): keep them loose so a loaded 2-core
      // machine's scheduling delays do not turn into start failures or failovers.
      startTimeoutMs: 60_000,
      requestTimeoutMs: 20_000,
      network: 'const:5mbps',
      titles: 'title-0002',
      watchMeanS: 'full',
      sink,
    });
    expect(sessions).toHaveLength(4);
    for (const s of sessions) {
      expect(s.exitReason).toBe('completed');
      expect(s.playedS).toBeCloseTo(TITLE_SEC, 3);
    }
    expect(summary.startFailures).toBe(0);
    const seg = sink.events.filter((e): e is Extract<QoeEvent, { type: 'segment' }> => e.type === 'segment');
    expect(seg.length).toBe(4 * 10);
    expect(seg.every((e) => e.edgeId === 'edge-b')).toBe(true);
    // Every session sends its own sid in the CMCD query, so hits prove the edge keys its
    // cache on the path, not on the query.
    expect(seg.map((e) => e.cacheStatus)).toEqual(seg.map(() => 'HIT'));
    expect(summary.edges.map((e) => e.id)).toEqual(['edge-b']);
    expect(summary.edges[0]!.hitRatio).toBe(1);
    // What was sent is what the edge's CMCD parser (the receiving side of the contract) reads.
    expect(urls.length).toBeGreaterThan(40);
    for (const u of urls) {
      const parsed = parseCmcd(queryArg(new URL(u).search.slice(1), 'CMCD'), {});
      expect(parsed, u).toBeDefined();
      expect(parsed!.sf).toBe('h');
      expect(parsed!.v).toBe(1);
      expect(sessions.map((s) => s.sessionId)).toContain(parsed!.sid);
    }
  });

  it('fails over to the second edge when the first is killed mid-session, without failing the session', async () => {
    const sink = new MemorySink();
    const [first, second] = cdn.edges;
    let killed: Promise<void> | undefined;
    const { sessions, summary } = await runPlayers({
      edges: [first!.url, second!.url],
      players: 3,
      rampMs: 500,
      durationMs: 120_000,
      loop: false,
      speed: 4,
      startTimeoutMs: 60_000,
      requestTimeoutMs: 20_000,
      network: 'const:5mbps',
      titles: 'title-0001',
      watchMeanS: 'full',
      sink,
      onEvent: (e) => {
        // Kill the first edge once every session has played from it for a while.
        if (!killed && e.type === 'segment' && sink.events.filter((x) => x.type === 'segment').length >= 9) killed = first!.close();
      },
    });
    await killed;
    expect(killed).toBeDefined();
    expect(summary.startFailures).toBe(0);
    for (const s of sessions) {
      expect(s.exitReason).toBe('completed');
      expect(s.errors).toEqual([]);
      expect(s.playedS).toBeCloseTo(TITLE_SEC, 3);
    }
    const failovers = sink.events.filter((e) => e.type === 'failover');
    expect(failovers.length).toBeGreaterThanOrEqual(1);
    expect(failovers[0]).toMatchObject({ fromEdge: 'edge-a', toEdge: 'edge-b' });
    const seg = sink.events.filter((e): e is Extract<QoeEvent, { type: 'segment' }> => e.type === 'segment');
    expect(seg.some((e) => e.edgeId === 'edge-a')).toBe(true);
    expect(seg.some((e) => e.edgeId === 'edge-b')).toBe(true);
  });
});

describe('real sockets: odd servers', () => {
  let server: Server;
  let base: string;
  beforeAll(async () => {
    server = createServer((req, res) => {
      if (req.url?.startsWith('/healthz')) return void res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true,"id":"odd"}');
      res.writeHead(200, { 'content-type': 'application/vnd.apple.mpegurl', 'x-edge-id': 'odd' }).end('#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=abc\n\n');
    });
    base = `http://127.0.0.1:${await listen(server, 0)}`;
  });
  afterAll(async () => {
    await closeServer(server, 100);
  });

  it('a malformed playlist from a real server ends the session with an error event', async () => {
    const sink = new MemorySink();
    const { sessions } = await runPlayers({ edges: [base], players: 1, loop: false, titles: 'title-0001', sink, durationMs: 30_000 });
    expect(sessions[0]!.exitReason).toBe('error');
    expect(sink.events.map((e) => e.type)).toEqual(['session_start', 'error', 'session_end']);
    expect(sink.events[1]).toMatchObject({ type: 'error', code: 'E_BAD_PLAYLIST', edgeId: 'odd' });
  });
});

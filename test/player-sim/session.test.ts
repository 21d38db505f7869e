import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { QoeEvent } from '../../telemetry/events.ts';
import { parseEvent } from '../../telemetry/validate.ts';
import { MemorySink } from '../../player-sim/sinks.ts';
import { JsonLinesSink } from '../../telemetry/jsonl-sink.ts';
import { runPlayers, type RunPlayersOptions } from '../../player-sim/runner.ts';
import type { Transport } from '../../player-sim/transport.ts';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ocdn-player-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const byType = (events: QoeEvent[], type: QoeEvent['type']) => events.filter((e) => e.type === type);

describe('virtual sessions', () => {
  it('same seed and trace → byte-identical event stream; another seed → a different one', async () => {
    const run = async (seed: number, file: string) => {
      const sink = new JsonLinesSink(join(dir, file), { append: false });
      // loop + a random trace + the stateful ABR: exercises every source of nondeterminism there is
      await runPlayers({
        virtual: true,
        seed,
        abr: 'dynamic',
        network: 'markov',
        players: 40,
        rampMs: 20_000,
        durationMs: 180_000,
        sink,
        virtualCdn: { titles: 8, durationSec: 120 },
      });
      await sink.close();
      return readFile(join(dir, file));
    };
    const a = await run(42, 'a.jsonl');
    const b = await run(42, 'b.jsonl');
    const c = await run(43, 'c.jsonl');
    expect(a.length).toBeGreaterThan(100_000);
    expect(a.equals(b)).toBe(true);
    expect(a.equals(c)).toBe(false);
    const lines = a.toString('utf8').trim().split('\n');
    // The telemetry side's validator (its DLQ gate) accepts every event the players write.
    for (const l of lines) expect(parseEvent(l)).toMatchObject({ ok: true });
    const events = lines.map((l) => JSON.parse(l) as QoeEvent);
    const types = new Set(events.map((e) => e.type));
    for (const t of ['session_start', 'startup', 'segment', 'switch', 'stall_start', 'stall_end', 'heartbeat', 'session_end'] as const)
      expect(types, t).toContain(t);
    // ids are unique and per-session seq runs 0, 1, 2, … with timestamps that never go back
    expect(new Set(events.map((e) => e.id)).size).toBe(events.length);
    const last = new Map<string, QoeEvent>();
    for (const e of events) {
      const prev = last.get(e.sessionId);
      expect(e.seq).toBe(prev ? prev.seq + 1 : 0);
      if (prev) expect(e.ts).toBeGreaterThanOrEqual(prev.ts);
      last.set(e.sessionId, e);
    }
    for (const e of last.values()) expect(e.type).toBe('session_end');
  });

  it('plays to ENDLIST or to the drawn watch time, with stall accounting consistent with events', async () => {
    const sink = new MemorySink();
    const { sessions, summary } = await runPlayers({
      virtual: true,
      network: 'walk:1.5mbps',
      players: 30,
      rampMs: 10_000,
      durationMs: 900_000,
      loop: false,
      watchMeanS: 60,
      sink,
      virtualCdn: { titles: 4, durationSec: 180 },
    });
    expect(summary.sessions).toBe(30);
    const reasons = new Set(sessions.map((s) => s.exitReason));
    expect(reasons).toContain('watch-time');
    for (const s of sessions) {
      const ev = sink.events.filter((e) => e.sessionId === s.sessionId);
      const end = ev[ev.length - 1]!;
      expect(end.type).toBe('session_end');
      if (end.type !== 'session_end') continue;
      expect(end.exitReason).toBe(s.exitReason);
      if (s.exitReason === 'completed') expect(s.playedS).toBeCloseTo(180, 3);
      const stallEnds = byType(ev, 'stall_end').reduce((sum, e) => sum + (e.type === 'stall_end' ? e.stallMs : 0), 0);
      // session_end's stalled time = the stall_end durations (+ one still open at the end)
      expect(s.stalledS * 1000).toBeGreaterThanOrEqual(stallEnds - ev.length);
      expect(byType(ev, 'stall_start').length - byType(ev, 'stall_end').length).toBeLessThanOrEqual(1);
      expect(byType(ev, 'switch').length).toBe(s.switches);
    }
  });

  it('fails over to the next edge when one dies mid-session, re-steering when the list runs out', async () => {
    const sink = new MemorySink();
    const { sessions, summary } = await runPlayers({
      virtual: true,
      players: 20,
      rampMs: 10_000,
      durationMs: 600_000,
      loop: false,
      watchMeanS: 'full',
      sink,
      virtualCdn: {
        titles: 4,
        durationSec: 120,
        edges: [
          { id: 'vedge-1', faults: [{ fromMs: 30_000, kind: 'down' }] },
          { id: 'vedge-2', faults: [{ fromMs: 50_000, toMs: 52_000, kind: '503' }] },
        ],
      },
    });
    expect(summary.startFailures).toBe(0);
    expect(sessions.every((s) => s.exitReason === 'completed')).toBe(true);
    const failovers = byType(sink.events, 'failover');
    expect(failovers.length).toBeGreaterThan(0);
    expect(failovers.some((e) => e.type === 'failover' && e.fromEdge === 'vedge-1' && e.toEdge === 'vedge-2')).toBe(true);
    // vedge-2's 503 blip, with vedge-1 long dead, can only be survived by re-steering
    expect(failovers.some((e) => e.type === 'failover' && e.fromEdge === 'vedge-2' && e.reason === 'http 503')).toBe(true);
    // nothing is fetched from the dead edge after it died
    const seg = byType(sink.events, 'segment').filter((e) => e.edgeId === 'vedge-1');
    expect(seg.every((e) => e.ts - 1_735_689_600_000 <= 30_000)).toBe(true);
    expect(sessions.reduce((n, s) => n + s.failovers, 0)).toBe(failovers.length);
  });

  it('a session that no edge can serve ends as a start failure after the start timeout', async () => {
    const sink = new MemorySink();
    const { sessions } = await runPlayers({
      virtual: true,
      players: 2,
      loop: false,
      startTimeoutMs: 8_000,
      sink,
      virtualCdn: { titles: 1, edges: [{ id: 'vedge-1', faults: [{ fromMs: 0, kind: 'hang' }] }] },
    });
    for (const s of sessions) {
      expect(s.exitReason).toBe('start-failure');
      expect(s.started).toBe(false);
      expect(s.endMs - s.startMs).toBeCloseTo(8_000, 3);
    }
  });

  it('a malformed playlist ends the session with an error event, not a crash', async () => {
    for (const [path, body] of [
      ['/vod/title-0001/master.m3u8', 'this is not a playlist'],
      ['/vod/title-0001/master.m3u8', '#EXTM3U\n#EXT-X-STREAM-INF:RESOLUTION=1x1\nlow/index.m3u8\n'],
      ['/vod/title-0001/145k/index.m3u8', '#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:four,\nseg-00000.ts\n#EXT-X-ENDLIST\n'],
    ] as const) {
      const sink = new MemorySink();
      const { sessions } = await runPlayers({
        virtual: true,
        players: 1,
        loop: false,
        titles: 'title-0001',
        sink,
        virtualCdn: { titles: 1, overrides: { [path]: { body } } },
      });
      expect(sessions[0]!.exitReason, body).toBe('error');
      const errors = byType(sink.events, 'error');
      expect(errors).toHaveLength(1);
      expect(errors[0]).toMatchObject({ code: 'E_BAD_PLAYLIST', fatal: true });
      expect(sink.events[sink.events.length - 1]!.type).toBe('session_end');
    }
  });

  it('plays byte-range segments with an EXT-X-MAP init section, absolute URIs and a discontinuity', async () => {
    const media = [
      '#EXTM3U',
      '#EXT-X-VERSION:7',
      '#EXT-X-TARGETDURATION:4',
      '#EXT-X-MAP:URI="init.mp4"',
      '#EXTINF:4,',
      '#EXT-X-BYTERANGE:400000@0',
      'main.mp4',
      '#EXTINF:4,',
      '#EXT-X-BYTERANGE:400000',
      'main.mp4',
      '#EXT-X-DISCONTINUITY',
      '#EXT-X-MAP:URI="http://vedge-1.virtual/vod/title-0001/ad/init.mp4"',
      '#EXTINF:4,',
      'http://vedge-1.virtual/vod/title-0001/ad/seg-00000.m4s',
      '#EXT-X-ENDLIST',
      '',
    ].join('\n');
    const master = '#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000\nmain/index.m3u8\n';
    const seen: { url: string; range?: { offset: number; length: number }; kind: string }[] = [];
    const wrapTransport = (t: Transport): Transport => ({
      fetch: (req) => {
        seen.push({ url: req.url.split('?')[0]!, range: req.range, kind: req.kind });
        return t.fetch(req);
      },
    });
    const sink = new MemorySink();
    const { sessions } = await runPlayers({
      virtual: true,
      players: 1,
      loop: false,
      titles: 'title-0001',
      watchMeanS: 'full',
      sink,
      wrapTransport,
      virtualCdn: {
        titles: 1,
        edges: 1,
        overrides: {
          '/vod/title-0001/master.m3u8': { body: master },
          '/vod/title-0001/main/index.m3u8': { body: media },
          '/vod/title-0001/main/init.mp4': { bytes: 900 },
          '/vod/title-0001/main/main.mp4': { bytes: 800_000 },
          '/vod/title-0001/ad/init.mp4': { bytes: 700 },
          '/vod/title-0001/ad/seg-00000.m4s': { bytes: 300_000 },
        },
      },
    });
    expect(sessions[0]!.exitReason).toBe('completed');
    expect(sessions[0]!.playedS).toBeCloseTo(12, 6);
    expect(
      seen.map((s) => `${s.kind} ${s.url.replace('http://vedge-1.virtual/vod/title-0001/', '')}${s.range ? ` ${s.range.offset}+${s.range.length}` : ''}`),
    ).toEqual([
      'manifest master.m3u8',
      'manifest main/index.m3u8',
      'init main/init.mp4',
      'segment main/main.mp4 0+400000',
      'segment main/main.mp4 400000+400000',
      'init ad/init.mp4',
      'segment ad/seg-00000.m4s',
    ]);
    expect(byType(sink.events, 'segment').map((e) => (e.type === 'segment' ? e.bytes : 0))).toEqual([400_000, 400_000, 300_000]);
  });

  it('sends CMCD on every request: query argument by default, headers by option', async () => {
    for (const cmcd of ['query', 'headers'] as const) {
      const reqs: { url: string; headers: Record<string, string>; kind: string }[] = [];
      const opts: RunPlayersOptions = {
        virtual: true,
        players: 1,
        loop: false,
        cmcd,
        durationMs: 30_000,
        wrapTransport: (t) => ({ fetch: (r) => (reqs.push({ url: r.url, headers: r.headers ?? {}, kind: r.kind }), t.fetch(r)) }),
        virtualCdn: { titles: 1, durationSec: 40 },
      };
      const { sessions } = await runPlayers(opts);
      expect(reqs.length).toBeGreaterThan(5);
      for (const r of reqs) {
        const payload = cmcd === 'query' ? decodeURIComponent(new URL(r.url).searchParams.get('CMCD') ?? '') : Object.values(r.headers).join(',');
        const keys = new Set(payload.split(',').map((p) => p.split('=')[0]));
        for (const k of ['cid', 'sf', 'sid', 'st', 'v', 'ot']) expect(keys, `${r.kind} ${payload}`).toContain(k);
        expect(payload).toContain(`sid="${sessions[0]!.sessionId}"`);
        if (r.kind === 'segment') for (const k of ['br', 'd', 'tb']) expect(keys, payload).toContain(k);
        if (cmcd === 'headers') expect(new URL(r.url).searchParams.has('CMCD')).toBe(false);
      }
      const segs = reqs.filter((r) => r.kind === 'segment');
      const payloadOf = (r: (typeof reqs)[number]) =>
        cmcd === 'query' ? decodeURIComponent(new URL(r.url).searchParams.get('CMCD')!) : Object.values(r.headers).join(',');
      // startup flag on the first segment, a throughput measurement and buffer length later
      expect(payloadOf(segs[0]!)).toMatch(/(^|,)su(,|$)/);
      expect(payloadOf(segs[segs.length - 1]!)).toMatch(/(^|,)mtp=\d+/);
      // once playing: buffer length, deadline (= buffer) and the next object's relative URL
      for (const k of ['bl', 'dl', 'nor']) expect(payloadOf(segs[segs.length - 2]!)).toMatch(new RegExp(`(^|,)${k}=`));
      expect(payloadOf(segs[segs.length - 1]!)).toMatch(/(^|,)bl=\d+/);
      expect(payloadOf(segs[0]!)).toMatch(/nor="seg-00001\.ts"/);
    }
  });
});

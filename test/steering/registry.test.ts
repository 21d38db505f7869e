import { describe, expect, it } from 'vitest';
import type { EdgeHeartbeat } from '../../common/contracts.ts';
import { isOcdnError } from '../../common/errors.ts';
import { EdgeRegistry, validateHeartbeat } from '../../steering/registry.ts';

const beat = (over: Partial<EdgeHeartbeat> = {}): EdgeHeartbeat => ({
  id: 'edge-1',
  url: 'http://127.0.0.1:9001',
  region: 'us-east',
  capacityBytes: 1e9,
  usedBytes: 0,
  inFlight: 0,
  rps: 0,
  egressBps: 0,
  healthy: true,
  titles: [],
  ts: Date.now(),
  ...over,
});

/** A registry on a hand-moved clock with a probe whose answer the test sets. */
function fixture(opts: { probes?: boolean; rise?: number; fall?: number } = {}) {
  let now = 1_000_000;
  let probeAnswer: true | string = true;
  const reg = new EdgeRegistry({
    heartbeatIntervalMs: 1_000,
    missedHeartbeats: 3,
    probeIntervalMs: opts.probes === false ? 0 : 1_000,
    rise: opts.rise ?? 2,
    fall: opts.fall ?? 3,
    now: () => now,
    probe: async () => probeAnswer,
  });
  return {
    reg,
    advance: (ms: number) => {
      now += ms;
      reg.checkStale();
    },
    setProbe: (a: true | string) => {
      probeAnswer = a;
    },
    ids: () => reg.healthy().map((e) => e.id),
  };
}

describe('heartbeat validation', () => {
  it('accepts a well-formed heartbeat and normalises the URL', () => {
    expect(validateHeartbeat({ ...beat(), url: 'http://127.0.0.1:9001/' }).url).toBe('http://127.0.0.1:9001');
  });

  it('names every problem of a bad body', () => {
    const err = (() => {
      try {
        validateHeartbeat({
          id: 'bad id',
          url: 'ftp://x',
          region: '',
          capacityBytes: -1,
          usedBytes: 'a',
          inFlight: 0,
          rps: 0,
          egressBps: Infinity,
          healthy: 'yes',
          titles: [1],
          ts: 0,
        });
      } catch (e) {
        return e;
      }
    })();
    expect(isOcdnError(err, 'E_BAD_REQUEST')).toBe(true);
    const msg = (err as Error).message;
    for (const part of ['id:', 'url:', 'region:', 'capacityBytes:', 'usedBytes:', 'egressBps:', 'healthy:', 'titles:']) expect(msg).toContain(part);
    expect(() => validateHeartbeat(null)).toThrow(/JSON object/);
    expect(() => validateHeartbeat([])).toThrow(/JSON object/);
    expect(() => validateHeartbeat({ ...beat(), titles: 'x' })).toThrow(/titles: must be an array/);
  });
});

describe('edge registry', () => {
  it('keeps a new edge out until `rise` good probes, and keeps load and inventory', async () => {
    const { reg, ids } = fixture();
    expect(reg.heartbeat(beat({ egressBps: 5e6, titles: ['t1', 't2'] }))).toBe('down');
    expect(reg.status('edge-1')).toMatchObject({ state: 'down', reason: expect.stringMatching(/^new: waiting for good probes/) });
    await reg.probeAll();
    expect(ids()).toEqual([]);
    await reg.probeAll();
    expect(ids()).toEqual(['edge-1']);
    const view = reg.healthy()[0]!;
    expect(view.load).toBe(5e6);
    expect([view.titles.has('t1'), view.titles.has('t2'), view.titles.has('t3')]).toEqual([true, true, false]);
    expect(reg.list()[0]).toMatchObject({ id: 'edge-1', state: 'up', healthy: true, titles: 2, egressBps: 5e6 });
  });

  it('without probes, a new edge needs `rise` heartbeats in a row', () => {
    const { reg, ids } = fixture({ probes: false, rise: 2 });
    expect(reg.heartbeat(beat())).toBe('down');
    expect(ids()).toEqual([]);
    expect(reg.heartbeat(beat())).toBe('up');
    expect(ids()).toEqual(['edge-1']);
  });

  it('takes an up edge out when it moves to another URL, until that URL passes probes', async () => {
    const { reg, ids, setProbe } = fixture();
    reg.heartbeat(beat());
    await reg.probeAll();
    await reg.probeAll();
    expect(ids()).toEqual(['edge-1']);
    setProbe('ECONNREFUSED');
    expect(reg.heartbeat(beat({ url: 'http://127.0.0.1:9555' }))).toBe('down');
    expect(reg.status('edge-1')).toMatchObject({ url: 'http://127.0.0.1:9555', reason: expect.stringMatching(/moved to a new URL/) });
    for (let i = 0; i < 5; i++) await reg.probeAll();
    expect(ids()).toEqual([]);
    setProbe(true);
    await reg.probeAll();
    await reg.probeAll();
    expect(ids()).toEqual(['edge-1']);
  });

  it('holds at most maxEdges records: a new id past it is refused, a forgotten one frees room', () => {
    let now = 1_000_000;
    const reg = new EdgeRegistry({ probeIntervalMs: 0, maxEdges: 2, forgetAfterMs: 10_000, now: () => now });
    reg.heartbeat(beat({ id: 'a' }));
    reg.heartbeat(beat({ id: 'b' }));
    expect(() => reg.heartbeat(beat({ id: 'c' }))).toThrow(/edge registry full \(2 edges\)/);
    reg.heartbeat(beat({ id: 'a' })); // a known id still beats
    now += 5_000;
    reg.heartbeat(beat({ id: 'a' }));
    now += 6_000; // b silent 11 s: forgotten when room is needed
    expect(reg.heartbeat(beat({ id: 'c' }))).toBe('down');
    expect(reg.list().map((e) => e.id)).toEqual(['a', 'c']);
  });

  it('keeps a fixed-size inventory however many titles a beat lists', () => {
    const { reg } = fixture({ probes: false, rise: 1 });
    const titles = Array.from({ length: 4096 }, (_, i) => `title-${i}`);
    reg.heartbeat(beat({ titles }));
    const view = reg.healthy()[0]!;
    expect(titles.every((t) => view.titles.has(t))).toBe(true);
    const strangers = Array.from({ length: 10_000 }, (_, i) => `other-${i}`).filter((t) => view.titles.has(t)).length;
    expect(strangers / 10_000).toBeLessThan(0.05);
    expect(reg.list()[0]!.titles).toBe(4096);
  });

  it('counts steered sessions into load until the next heartbeat', () => {
    const { reg } = fixture({ probes: false, rise: 1 });
    reg.heartbeat(beat({ egressBps: 1e6 }));
    reg.noteSteered('edge-1');
    reg.noteSteered('edge-1');
    expect(reg.healthy()[0]!.load).toBe(1e6 + 2 * 2e6);
    reg.heartbeat(beat({ egressBps: 3e6 }));
    expect(reg.healthy()[0]!.load).toBe(3e6);
  });

  it('puts an edge out after 3 missed heartbeats, and back only after heartbeats and good probes', async () => {
    const { reg, advance, ids } = fixture();
    reg.heartbeat(beat());
    await reg.probeAll();
    await reg.probeAll();
    advance(3_000);
    expect(ids()).toEqual(['edge-1']); // 3 s of silence is within the slack of the third beat
    advance(600);
    expect(ids()).toEqual([]);
    expect(reg.status('edge-1')).toMatchObject({ state: 'down', reason: expect.stringMatching(/missed heartbeats/) });
    // Probes alone do not bring a silent edge back.
    await reg.probeAll();
    await reg.probeAll();
    expect(ids()).toEqual([]);
    // Heartbeats resume: back after `rise` good probes, not on the first beat.
    reg.heartbeat(beat());
    expect(ids()).toEqual([]);
    await reg.probeAll();
    expect(ids()).toEqual([]);
    await reg.probeAll();
    expect(ids()).toEqual(['edge-1']);
  });

  it('has rise/fall hysteresis on probes', async () => {
    const { reg, setProbe, ids } = fixture({ rise: 2, fall: 3 });
    reg.heartbeat(beat());
    await reg.probeAll();
    await reg.probeAll();
    setProbe('ECONNREFUSED');
    await reg.probeAll();
    await reg.probeAll();
    expect(ids()).toEqual(['edge-1']);
    setProbe(true);
    await reg.probeAll(); // a good probe resets the failure run
    setProbe('ECONNREFUSED');
    await reg.probeAll();
    await reg.probeAll();
    expect(ids()).toEqual(['edge-1']);
    await reg.probeAll();
    expect(ids()).toEqual([]);
    expect(reg.status('edge-1')!.reason).toMatch(/3 failed probes of \/healthz \(ECONNREFUSED\)/);
    // Heartbeats keep coming (the edge reaches us, we do not reach it): still out.
    reg.heartbeat(beat());
    reg.heartbeat(beat());
    expect(ids()).toEqual([]);
    setProbe(true);
    await reg.probeAll();
    setProbe('timeout');
    await reg.probeAll(); // one good then one bad: the run starts again
    setProbe(true);
    await reg.probeAll();
    expect(ids()).toEqual([]);
    await reg.probeAll();
    expect(ids()).toEqual(['edge-1']);
  });

  it('without probes, consecutive heartbeats bring an edge back', () => {
    const { reg, advance, ids } = fixture({ probes: false, rise: 3 });
    reg.heartbeat(beat());
    advance(4_000);
    expect(ids()).toEqual([]);
    reg.heartbeat(beat());
    reg.heartbeat(beat());
    expect(ids()).toEqual([]);
    reg.heartbeat(beat());
    expect(ids()).toEqual(['edge-1']);
  });

  it('takes an edge out at once when it reports itself unhealthy (draining)', async () => {
    const { reg, ids } = fixture();
    reg.heartbeat(beat());
    reg.heartbeat(beat({ id: 'edge-2', url: 'http://127.0.0.1:9002' }));
    await reg.probeAll();
    await reg.probeAll();
    expect(ids()).toEqual(['edge-1', 'edge-2']);
    reg.heartbeat(beat({ healthy: false }));
    expect(ids()).toEqual(['edge-2']);
    expect(reg.status('edge-1')!.reason).toMatch(/draining/);
    await reg.probeAll();
    await reg.probeAll();
    expect(ids()).toEqual(['edge-2']); // good probes do not override what the edge says
  });

  it('follows an edge that restarts on another URL', async () => {
    const { reg, ids } = fixture();
    reg.heartbeat(beat());
    reg.heartbeat(beat({ healthy: false }));
    reg.heartbeat(beat({ url: 'http://127.0.0.1:9999', region: 'us-west' }));
    expect(ids()).toEqual([]);
    await reg.probeAll();
    await reg.probeAll();
    expect(ids()).toEqual(['edge-1']);
    expect(reg.healthy()[0]).toMatchObject({ url: 'http://127.0.0.1:9999', region: 'us-west' });
  });

  it('forgets edges silent for long', () => {
    const { reg, advance } = fixture();
    reg.heartbeat(beat());
    advance(601_000);
    expect(reg.size).toBe(0);
    expect(reg.list()).toEqual([]);
  });

  it('keeps QoE demotion as a flag on the view', () => {
    const { reg } = fixture({ probes: false, rise: 1 });
    reg.heartbeat(beat());
    expect(reg.setDemoted('edge-1', true)).toBe(true);
    expect(reg.healthy()[0]!.demoted).toBe(true);
    reg.setDemoted('edge-1', false);
    expect(reg.healthy()[0]!.demoted).toBeUndefined();
    expect(reg.setDemoted('nope', true)).toBe(false);
  });
});

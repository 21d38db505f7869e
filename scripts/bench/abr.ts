/**
 * ABR benchmark: the four algorithms in virtual time on 50 seeds × four trace families.
 *
 *   npm run bench:abr [-- --seeds 50 --sessions 4 --title 240 --json]
 *
 * QoE per segment is the linear QoE of the MPC paper (Yin et al., SIGCOMM 2015) in Mbit/s
 * units: (Σ bitrate − 4.3 · stall seconds − Σ |bitrate change|) / segments. Startup delay is
 * left out of it (it is reported apart, as VST). Every algorithm sees exactly the same traces,
 * titles and watch behaviour for a seed, so differences are the algorithms'.
 */
import { parseArgs } from 'node:util';
import { ABR_NAMES, type AbrName } from '../../player-sim/abr/index.ts';
import { rngFor } from '../../player-sim/rng.ts';
import { runPlayers } from '../../player-sim/runner.ts';
import type { SessionResult } from '../../player-sim/session.ts';
import { rebufferRatio, vstQuantileMs, vstSketch } from '../../telemetry/qoe-math.ts';

const { values } = parseArgs({
  options: {
    seeds: { type: 'string', default: '50' },
    sessions: { type: 'string', default: '4' },
    title: { type: 'string', default: '240' },
    json: { type: 'boolean', default: false },
  },
});
const SEEDS = Number(values.seeds);
const SESSIONS = Number(values.sessions);
const TITLE_S = Number(values.title);

/** The trace of a family for a seed; const and step draw their rates from the seed. */
const FAMILIES: Record<string, (seed: number) => string> = {
  constant: (seed) => {
    const r = rngFor(seed, 'bench-const');
    return `const:${(0.8 + r() * 7.2).toFixed(3)}mbps`;
  },
  step: (seed) => {
    const r = rngFor(seed, 'bench-step');
    const hi = 3 + r() * 7;
    const lo = 0.4 + r() * 1.1;
    const at = 5 + r() * 55;
    const back = at + 20 + r() * 60;
    return `step:${hi.toFixed(3)}mbps,${lo.toFixed(3)}mbps@${at.toFixed(1)}s,${hi.toFixed(3)}mbps@${back.toFixed(1)}s`;
  },
  walk: () => 'walk',
  markov: () => 'markov',
};

interface Row {
  family: string;
  abr: AbrName;
  qoe: number;
  qoeSd: number;
  bitrateMbps: number;
  stallPerSegS: number;
  switchPerSegMbps: number;
  rebufferRatio: number | null;
  switchesPerMin: number;
  vstP50Ms: number | null;
  /** Bytes of abandoned downloads / all bytes. */
  wasted: number;
}

function sessionQoe(s: SessionResult): { qoe: number; bitrate: number; stall: number; sw: number; segments: number } {
  const segs = (s.segments ?? []).filter((x) => !x.abandoned);
  let bitrate = 0;
  let sw = 0;
  for (let i = 0; i < segs.length; i++) {
    bitrate += segs[i]!.bitrate / 1e6;
    if (i > 0) sw += Math.abs(segs[i]!.bitrate - segs[i - 1]!.bitrate) / 1e6;
  }
  const n = Math.max(1, segs.length);
  return { qoe: (bitrate - 4.3 * s.stalledS - sw) / n, bitrate: bitrate / n, stall: s.stalledS / n, sw: sw / n, segments: segs.length };
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
const sd = (xs: number[]) => {
  const m = mean(xs);
  return Math.sqrt(mean(xs.map((x) => (x - m) ** 2)));
};

const started = performance.now();
const rows: Row[] = [];
for (const [family, traceOf] of Object.entries(FAMILIES)) {
  for (const abr of ABR_NAMES) {
    const perSeedQoe: number[] = [];
    const all: ReturnType<typeof sessionQoe>[] = [];
    let played = 0;
    let stalled = 0;
    let switches = 0;
    const vst = vstSketch();
    let wastedBytes = 0;
    let totalBytes = 0;
    for (let seed = 1; seed <= SEEDS; seed++) {
      const { sessions } = await runPlayers({
        virtual: true,
        seed,
        abr,
        network: traceOf(seed),
        players: SESSIONS,
        rampMs: 0,
        durationMs: TITLE_S * 1000 * 4,
        loop: false,
        watchMeanS: 'full',
        recordSegments: true,
        virtualCdn: { titles: 8, durationSec: TITLE_S, ladder: 'apple' },
      });
      const q = sessions.map(sessionQoe);
      all.push(...q);
      perSeedQoe.push(mean(q.map((x) => x.qoe)));
      for (const s of sessions) {
        played += s.playedS;
        stalled += s.stalledS;
        switches += s.switches;
        if (s.vstMs !== undefined) vst.accept(s.vstMs);
        totalBytes += s.bytes;
        for (const x of s.segments ?? []) if (x.abandoned) wastedBytes += x.bytes;
      }
    }
    rows.push({
      family,
      abr,
      qoe: mean(perSeedQoe),
      qoeSd: sd(perSeedQoe),
      bitrateMbps: mean(all.map((x) => x.bitrate)),
      stallPerSegS: mean(all.map((x) => x.stall)),
      switchPerSegMbps: mean(all.map((x) => x.sw)),
      rebufferRatio: rebufferRatio(stalled, played),
      switchesPerMin: switches / Math.max(1e-9, played / 60),
      vstP50Ms: vstQuantileMs(vst, 0.5),
      wasted: wastedBytes / Math.max(1, totalBytes),
    });
  }
}

if (values.json) {
  process.stdout.write(`${JSON.stringify({ seeds: SEEDS, sessionsPerSeed: SESSIONS, titleS: TITLE_S, wallMs: performance.now() - started, rows }, null, 2)}\n`);
} else {
  const head = [
    'family',
    'abr',
    'QoE/seg (sd over seeds)',
    'bitrate Mbit/s',
    'stall s/seg',
    '|switch| Mbit/s/seg',
    'rebuffer',
    'switches/min',
    'VST p50',
    'abandoned bytes',
  ];
  const body = rows.map((r) => [
    r.family,
    r.abr,
    `${r.qoe.toFixed(3)} (${r.qoeSd.toFixed(3)})`,
    r.bitrateMbps.toFixed(3),
    r.stallPerSegS.toFixed(4),
    r.switchPerSegMbps.toFixed(3),
    r.rebufferRatio === null ? '-' : `${(r.rebufferRatio * 100).toFixed(3)}%`,
    r.switchesPerMin.toFixed(2),
    r.vstP50Ms === null ? '-' : `${Math.round(r.vstP50Ms)} ms`,
    `${(r.wasted * 100).toFixed(2)}%`,
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ');
  process.stdout.write(
    `${[
      `ABR benchmark: ${SEEDS} seeds × ${SESSIONS} sessions × ${TITLE_S} s titles (Apple ladder, 4 s segments), virtual time; QoE = bitrate − 4.3·stall − |switch| per segment (Mbit/s)`,
      line(head),
      widths.map((w) => '-'.repeat(w)).join('  '),
      ...body.map(line),
      `wall ${((performance.now() - started) / 1000).toFixed(1)} s`,
    ].join('\n')}\n`,
  );
}

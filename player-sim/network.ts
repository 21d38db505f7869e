import { readFileSync } from 'node:fs';
import { ErrorCodes, OcdnError } from '../common/errors.ts';
import { parseBitrate, parseDuration } from '../common/units.ts';
import { exponential, normal, rngFor, type Rng } from './rng.ts';

/**
 * Bandwidth of one session's access link as a function of session time (ms since the session
 * started). Piecewise constant: both the closed-form transfer model (virtual mode) and the
 * token bucket (real sockets) integrate it exactly, so the two modes see the same link.
 */
export interface Trace {
  /** bits/s at time t. */
  rateAt(tMs: number): number;
  /** The first time after t at which the rate changes; Infinity when it never does. */
  nextChange(tMs: number): number;
}

/**
 * Change points (times[0] = 0) and the rate from each one on. A generator, when given, appends
 * more points as time moves past the last one (random walk, Markov), drawing from the
 * session's own PRNG in time order, so a trace is the same however far and often it is read.
 */
export class PiecewiseTrace implements Trace {
  private readonly times: number[];
  private readonly rates: number[];
  private cursor = 0;

  constructor(
    times: number[],
    rates: number[],
    private readonly extend?: (lastTime: number, lastRate: number) => { at: number; rate: number },
    private readonly loopMs?: number,
  ) {
    if (times.length === 0 || times.length !== rates.length || times[0] !== 0) throw new OcdnError(ErrorCodes.CONFIG, 'a trace needs points starting at t=0');
    for (const r of rates) if (!(r >= 0) || !Number.isFinite(r)) throw new OcdnError(ErrorCodes.CONFIG, `trace rate must be ≥ 0 bit/s, got ${r}`);
    this.times = [...times];
    this.rates = [...rates];
  }

  private ensure(t: number): void {
    if (!this.extend) return;
    while (this.times[this.times.length - 1]! <= t) {
      const next = this.extend(this.times[this.times.length - 1]!, this.rates[this.rates.length - 1]!);
      this.times.push(next.at);
      this.rates.push(next.rate);
    }
  }

  /** Index of the piece holding t; the cursor makes the usual forward scans O(1). */
  private indexAt(t: number): number {
    this.ensure(t);
    let i = Math.min(this.cursor, this.times.length - 1);
    if (this.times[i]! > t) i = 0;
    while (i + 1 < this.times.length && this.times[i + 1]! <= t) i++;
    this.cursor = i;
    return i;
  }

  private local(tMs: number): { t: number; base: number } {
    if (this.loopMs === undefined || tMs < this.loopMs) return { t: tMs, base: 0 };
    const base = Math.floor(tMs / this.loopMs) * this.loopMs;
    return { t: tMs - base, base };
  }

  rateAt(tMs: number): number {
    const { t } = this.local(Math.max(0, tMs));
    return this.rates[this.indexAt(t)]!;
  }

  nextChange(tMs: number): number {
    const { t, base } = this.local(Math.max(0, tMs));
    const i = this.indexAt(t);
    const next = this.times[i + 1];
    if (next !== undefined) return base + next;
    if (this.loopMs !== undefined) return base + this.loopMs;
    return Number.POSITIVE_INFINITY;
  }
}

/** When `bytes` sent from `startMs` at the trace's rate have all arrived (ms). */
export function transferEnd(trace: Trace, startMs: number, bytes: number): number {
  let bits = bytes * 8;
  let t = startMs;
  for (let guard = 0; bits > 0; guard++) {
    if (guard > 1_000_000) throw new OcdnError(ErrorCodes.INTERNAL, 'trace integration did not converge');
    const rate = trace.rateAt(t);
    const next = trace.nextChange(t);
    if (rate > 0) {
      const capacity = (rate * (next - t)) / 1000;
      if (capacity >= bits) return t + (bits / rate) * 1000;
      bits -= capacity;
    } else if (next === Number.POSITIVE_INFINITY) {
      return Number.POSITIVE_INFINITY;
    }
    t = next;
  }
  return t;
}

/** Bytes the link carries between a and b (ms). */
export function bytesBetween(trace: Trace, a: number, b: number): number {
  let bits = 0;
  let t = a;
  while (t < b) {
    const next = Math.min(b, trace.nextChange(t));
    bits += (trace.rateAt(t) * (next - t)) / 1000;
    t = next;
  }
  return bits / 8;
}

/** Makes the trace of one session; `sessionKey` feeds the seeded generators. */
export type TraceFactory = (sessionKey: string) => Trace;

export interface TraceSpecOptions {
  seed: number;
  /** Reads `file:` traces; tests inject it. */
  readFile?: (path: string) => string;
}

const WALK_DEFAULTS = { start: 3e6, min: 0.3e6, max: 12e6, sigma: 0.25, stepMs: 1000 };
const MARKOV_DEFAULTS = { on: 6e6, off: 0.3e6, onMeanMs: 20_000, offMeanMs: 4_000 };

function kv(args: string[]): { positional: string[]; named: Map<string, string> } {
  const positional: string[] = [];
  const named = new Map<string, string>();
  for (const a of args) {
    const eq = a.indexOf('=');
    if (eq > 0) named.set(a.slice(0, eq).trim().toLowerCase(), a.slice(eq + 1).trim());
    else if (a.trim() !== '') positional.push(a.trim());
  }
  return { positional, named };
}

/**
 * Parses `--network`: `const:5mbps`, `step:6mbps,1mbps@30s[,3mbps@60s…]`,
 * `walk[:3mbps][,min=…,max=…,sigma=0.25,step=1s]`, `markov[:6mbps,0.3mbps,20s,4s]`
 * (on rate, off rate, mean on and off durations, exponential), `file:trace.json`.
 */
export function parseTraceSpec(spec: string, opts: TraceSpecOptions): TraceFactory {
  const colon = spec.indexOf(':');
  const kind = (colon === -1 ? spec : spec.slice(0, colon)).trim().toLowerCase();
  const rest = colon === -1 ? '' : spec.slice(colon + 1);
  const args = rest === '' ? [] : rest.split(',');
  const bad = (why: string) => new OcdnError(ErrorCodes.CONFIG, `--network "${spec}": ${why}`);
  try {
    switch (kind) {
      case 'const': {
        if (args.length !== 1) throw bad('use const:<rate>, e.g. const:5mbps');
        const rate = parseBitrate(args[0]!);
        return () => new PiecewiseTrace([0], [rate]);
      }
      case 'step': {
        if (args.length < 1) throw bad('use step:<rate>,<rate>@<time>…, e.g. step:6mbps,1mbps@30s');
        const times: number[] = [];
        const rates: number[] = [];
        args.forEach((a, i) => {
          const [r, at] = a.split('@');
          if (i === 0 && at !== undefined && parseDuration(at) !== 0) throw bad('the first step starts at 0');
          if (i > 0 && at === undefined) throw bad(`step ${i + 1} needs @<time>`);
          const t = i === 0 ? 0 : parseDuration(at!);
          if (i > 0 && t <= times[times.length - 1]!) throw bad('step times must increase');
          times.push(t);
          rates.push(parseBitrate(r!));
        });
        return () => new PiecewiseTrace(times, rates);
      }
      case 'walk': {
        const { positional, named } = kv(args);
        const p = { ...WALK_DEFAULTS };
        if (positional[0]) p.start = parseBitrate(positional[0]);
        if (named.has('min')) p.min = parseBitrate(named.get('min')!);
        if (named.has('max')) p.max = parseBitrate(named.get('max')!);
        if (named.has('sigma')) p.sigma = Number(named.get('sigma'));
        if (named.has('step')) p.stepMs = parseDuration(named.get('step')!);
        if (!(p.min > 0 && p.max >= p.min && p.sigma >= 0 && p.stepMs > 0)) throw bad('need 0 < min ≤ max, sigma ≥ 0, step > 0');
        return (key) => {
          const rng = rngFor(opts.seed, 'walk', key);
          // Geometric random walk (log-rate moves by N(0, σ) each step), reflected into
          // [min, max]: the usual model for a cellular/Wi-Fi link drifting over time.
          const lo = Math.log(p.min);
          const hi = Math.log(p.max);
          const start = Math.min(p.max, Math.max(p.min, p.start));
          return new PiecewiseTrace([0], [start], (last, rate) => {
            let x = Math.log(rate) + p.sigma * normal(rng);
            if (x > hi) x = hi - (x - hi);
            if (x < lo) x = lo + (lo - x);
            return { at: last + p.stepMs, rate: Math.exp(Math.min(hi, Math.max(lo, x))) };
          });
        };
      }
      case 'markov': {
        const { positional } = kv(args);
        const p = { ...MARKOV_DEFAULTS };
        if (positional[0]) p.on = parseBitrate(positional[0]);
        if (positional[1]) p.off = parseBitrate(positional[1]);
        if (positional[2]) p.onMeanMs = parseDuration(positional[2]);
        if (positional[3]) p.offMeanMs = parseDuration(positional[3]);
        if (!(p.onMeanMs > 0 && p.offMeanMs > 0)) throw bad('mean durations must be > 0');
        return (key) => {
          const rng: Rng = rngFor(opts.seed, 'markov', key);
          // Two-state on/off chain with exponential holding times, starting "on". A piece
          // beginning at `last` with `rate` holds for a draw of that state's mean; at least
          // 100 ms so the piece count stays bounded when a draw is tiny.
          return new PiecewiseTrace([0], [p.on], (last, rate) => {
            const hold = exponential(rng, rate === p.on ? p.onMeanMs : p.offMeanMs);
            return { at: last + Math.max(100, hold), rate: rate === p.on ? p.off : p.on };
          });
        };
      }
      case 'file': {
        if (rest === '') throw bad('use file:<path to JSON>');
        const text = (opts.readFile ?? ((f: string) => readFileSync(f, 'utf8')))(rest);
        const { times, rates, loopMs } = parseTraceFile(text, bad);
        return () => new PiecewiseTrace(times, rates, undefined, loopMs);
      }
      default:
        throw bad('kind must be const, step, walk, markov or file');
    }
  } catch (err) {
    if (err instanceof OcdnError && err.message.startsWith('--network')) throw err;
    throw bad((err as Error).message.replace(/^E_CONFIG: /, ''));
  }
}

/**
 * Trace files: `[{ "t": 0, "mbps": 5 }, { "t": 30, "kbps": 800 }, …]` (t in seconds; rate as
 * bps, kbps, mbps or a "5mbps" string), or `{ "loop": true, "points": [...] }` to repeat.
 * Pairs `[t, bps]` are accepted too (the shape most published traces convert to).
 */
export function parseTraceFile(text: string, bad: (why: string) => Error): { times: number[]; rates: number[]; loopMs?: number } {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw bad(`trace file is not JSON: ${(err as Error).message}`);
  }
  const obj = raw as { loop?: boolean; points?: unknown[] };
  const points = Array.isArray(raw) ? raw : Array.isArray(obj?.points) ? obj.points : undefined;
  if (!points || points.length === 0) throw bad('trace file needs a non-empty array of points');
  const times: number[] = [];
  const rates: number[] = [];
  for (const p of points) {
    let t: number;
    let rate: number;
    if (Array.isArray(p)) {
      t = Number(p[0]);
      rate = Number(p[1]);
    } else {
      const q = p as Record<string, unknown>;
      t = Number(q.t ?? q.atS ?? q.time);
      rate =
        typeof q.rate === 'string'
          ? parseBitrate(q.rate)
          : q.bps !== undefined
            ? Number(q.bps)
            : q.kbps !== undefined
              ? Number(q.kbps) * 1e3
              : q.mbps !== undefined
                ? Number(q.mbps) * 1e6
                : Number.NaN;
    }
    if (!Number.isFinite(t) || t < 0 || !Number.isFinite(rate) || rate < 0) throw bad(`bad trace point ${JSON.stringify(p)}`);
    const ms = t * 1000;
    if (times.length === 0 && ms !== 0) throw bad('the first trace point must be at t=0');
    if (times.length > 0 && ms <= times[times.length - 1]!) throw bad('trace times must increase');
    times.push(ms);
    rates.push(rate);
  }
  if (!rates.some((r) => r > 0)) throw bad('a trace that is zero everywhere never delivers a byte');
  if (obj && !Array.isArray(raw) && obj.loop) {
    const period = times[times.length - 1]! + 1000; // the last point lasts one second, then the trace repeats
    return { times, rates, loopMs: period };
  }
  return { times, rates };
}

/**
 * CMSD (CTA-5006, Common Media Server Data) as edges send it and players read it.
 *
 * - `CMSD-Static` is a Structured Fields Dictionary (RFC 8941 §3.2) about the object: the
 *   packager stores it as S3 metadata (origin/cmsd-static.ts) and every tier passes it through
 *   unchanged.
 * - `CMSD-Dynamic` is a Structured Fields List (RFC 8941 §3.1) with one Item per server on the
 *   path, in order from the origin side to the client: CTA-5006 says each server "SHALL append"
 *   its own Item, whose bare value is a String identifying the server and whose Parameters carry
 *   the keys, e.g. `"shield-1";etp=9000, "edge-1";etp=120000;du`.
 *
 * This edge's Item: `"<edge id>"` with
 * - `etp`: an EWMA of this edge's recent per-response delivery rate (body bytes over the time
 *   from writing the head to the last byte handed to the kernel), in kbps. It is an estimate for
 *   the edge, not for the client of this response: a per-client figure would have to be formatted
 *   per request, which the hit path cannot afford. Bodies that fit in the socket's send buffer
 *   finish at memory speed, so on fast links it reads high; it falls with slow clients whose
 *   responses outgrow the buffer. Omitted until the first sample.
 * - `du` (duress, a bare `true`): requests waiting on upstream exceed the threshold, or the edge
 *   is draining. "This key MUST NOT be sent if it is false."
 * - `rtt` is never sent: Node exposes no TCP_INFO, so the edge has no RTT of its own.
 * - `mb` is never sent: nothing in ocdn (steering or edge) caps a client's bitrate.
 *
 * Hits carry a prebuilt Item refreshed at most every `refreshMs`; misses format it afresh and
 * append it to the Items the upstream tier sent.
 */

export type SfBare = string | number | boolean;
export interface SfItem {
  value: SfBare;
  params: Record<string, SfBare>;
}

/** Default: requests waiting on upstream above which the edge reports duress. */
export const DEFAULT_DURESS_IN_FLIGHT = 256;
const REFRESH_MS = 250;
/** Weight of the newest throughput sample. */
const EWMA_ALPHA = 0.25;
/** Below this the timer's resolution dominates a sample. */
const MIN_SAMPLE_MS = 0.05;

function sfString(s: string): string {
  return `"${s.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}

export interface CmsdDynamicOptions {
  id: string;
  /** Whether the edge is in duress right now (read at most every refresh). */
  duress: () => boolean;
  refreshMs?: number;
}

/** This edge's CMSD-Dynamic Item, kept prebuilt for the hit path. */
export class CmsdDynamic {
  private readonly name: string;
  private readonly refreshMs: number;
  private etpKbps: number | undefined;
  private builtAt = Number.NEGATIVE_INFINITY;
  private item = '';

  constructor(private readonly opts: CmsdDynamicOptions) {
    this.name = sfString(opts.id);
    this.refreshMs = opts.refreshMs ?? REFRESH_MS;
  }

  /** One response's delivery: `bytes` in `ms`. */
  observe(bytes: number, ms: number): void {
    if (bytes <= 0) return;
    const kbps = (bytes * 8) / Math.max(ms, MIN_SAMPLE_MS);
    this.etpKbps = this.etpKbps === undefined ? kbps : this.etpKbps + EWMA_ALPHA * (kbps - this.etpKbps);
  }

  /** Times `res` from now until its last byte is handed to the kernel, as one sample of `bytes`. */
  sample(res: { once(event: 'finish', fn: () => void): unknown }, bytes: number): void {
    const t0 = performance.now();
    res.once('finish', () => this.observe(bytes, performance.now() - t0));
  }

  /** The Item as of at most `refreshMs` ago: the same string object between refreshes. */
  current(now: number): string {
    if (now - this.builtAt >= this.refreshMs) this.rebuild(now);
    return this.item;
  }

  /** The Item as of now (slow path). */
  fresh(now: number): string {
    this.rebuild(now);
    return this.item;
  }

  /** The header for a response the upstream tier answered with `upstream` (its CMSD-Dynamic, if any). */
  chained(upstream: string | undefined, now: number): string {
    const own = this.fresh(now);
    return upstream === undefined || upstream.trim() === '' ? own : `${upstream}, ${own}`;
  }

  private rebuild(now: number): void {
    let s = this.name;
    if (this.etpKbps !== undefined) s += `;etp=${Math.round(this.etpKbps)}`;
    if (this.opts.duress()) s += ';du';
    this.item = s;
    this.builtAt = now;
  }
}

// ---- parsing (players, tests): the subset of RFC 8941 CMSD uses -------------------------------

class Cursor {
  i = 0;
  constructor(readonly s: string) {}
  peek(): string {
    return this.s[this.i] ?? '';
  }
  ows(): void {
    while (this.peek() === ' ' || this.peek() === '\t') this.i++;
  }
  sp(): void {
    while (this.peek() === ' ') this.i++;
  }
  done(): boolean {
    return this.i >= this.s.length;
  }
  fail(what: string): never {
    throw new SyntaxError(`CMSD: ${what} at ${this.i} in ${JSON.stringify(this.s.slice(0, 200))}`);
  }
}

function parseKey(c: Cursor): string {
  const m = /^[a-z*][a-z0-9_\-.*]*/.exec(c.s.slice(c.i));
  if (m === null) c.fail('key expected');
  c.i += m[0].length;
  return m[0];
}

function parseBare(c: Cursor): SfBare {
  const ch = c.peek();
  if (ch === '"') {
    let out = '';
    c.i++;
    for (;;) {
      const x = c.peek();
      if (x === '') c.fail('unterminated string');
      c.i++;
      if (x === '"') return out;
      if (x === '\\') {
        const y = c.peek();
        if (y !== '"' && y !== '\\') c.fail('bad escape');
        out += y;
        c.i++;
      } else out += x;
    }
  }
  if (ch === '?') {
    const v = c.s[c.i + 1];
    if (v !== '0' && v !== '1') c.fail('bad boolean');
    c.i += 2;
    return v === '1';
  }
  const num = /^-?\d{1,15}(\.\d{1,3})?/.exec(c.s.slice(c.i));
  if (num !== null) {
    c.i += num[0].length;
    return Number(num[0]);
  }
  const tok = /^[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*/.exec(c.s.slice(c.i));
  if (tok !== null) {
    c.i += tok[0].length;
    return tok[0];
  }
  return c.fail('value expected');
}

function parseParams(c: Cursor): Record<string, SfBare> {
  const params: Record<string, SfBare> = {};
  while (c.peek() === ';') {
    c.i++;
    c.sp();
    const k = parseKey(c);
    if (c.peek() === '=') {
      c.i++;
      params[k] = parseBare(c);
    } else params[k] = true;
  }
  return params;
}

/** Splits a List or Dictionary: members separated by `,` with optional whitespace. */
function members(c: Cursor, member: () => void): void {
  c.sp();
  while (!c.done()) {
    member();
    c.ows();
    if (c.done()) return;
    if (c.peek() !== ',') c.fail('comma expected');
    c.i++;
    c.ows();
    if (c.done()) c.fail('trailing comma');
  }
}

/** CMSD-Dynamic: one Item per server, origin side first. Throws SyntaxError on malformed input. */
export function parseCmsdDynamic(text: string): SfItem[] {
  const c = new Cursor(text);
  const out: SfItem[] = [];
  members(c, () => {
    const value = parseBare(c);
    out.push({ value, params: parseParams(c) });
  });
  return out;
}

/** CMSD-Static: key → value (a bare key is `true`). Throws SyntaxError on malformed input. */
export function parseCmsdStatic(text: string): Record<string, SfBare> {
  const c = new Cursor(text);
  const out: Record<string, SfBare> = {};
  members(c, () => {
    const k = parseKey(c);
    if (c.peek() === '=') {
      c.i++;
      out[k] = parseBare(c);
    } else out[k] = true;
    parseParams(c); // member parameters carry nothing in CMSD
  });
  return out;
}

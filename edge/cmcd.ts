/**
 * CMCD (CTA-5004) as players send it: the `CMCD` query argument (URL-encoded) or the
 * `CMCD-Request`, `CMCD-Object`, `CMCD-Status` and `CMCD-Session` headers, each a
 * comma-separated list of `key=value` (or bare `key` for true). CMCD is advisory telemetry: a
 * malformed pair is dropped and the rest kept, and nothing here ever fails a request.
 */

export type CmcdValue = string | number | boolean;
export type Cmcd = Record<string, CmcdValue>;

export const CMCD_HEADERS = ['cmcd-request', 'cmcd-object', 'cmcd-status', 'cmcd-session'] as const;

const MAX_CMCD_LENGTH = 4096;
const MAX_KEYS = 40;

type Kind = 'int' | 'num' | 'str' | 'token' | 'bool';

/** Types of the keys CTA-5004 defines; keys outside this list are kept only if they look custom (`x-…`, `com.example-…`). */
const KEY_KINDS: Record<string, Kind> = {
  br: 'int',
  bl: 'int',
  bs: 'bool',
  cid: 'str',
  d: 'int',
  dl: 'int',
  mtp: 'int',
  nor: 'str',
  nrr: 'str',
  ot: 'token',
  pr: 'num',
  rtp: 'int',
  sf: 'token',
  sid: 'str',
  st: 'token',
  su: 'bool',
  tb: 'int',
  v: 'int',
};

const TOKENS: Record<string, RegExp> = {
  ot: /^(m|a|v|av|i|c|tt|k|o)$/,
  sf: /^(d|h|s|o)$/,
  st: /^(v|l)$/,
};

const KEY = /^[a-z][a-z0-9]*(?:[-.][a-z0-9]+)*$/;

/** Splits on commas outside double-quoted strings. */
function splitPairs(text: string): string[] {
  const out: string[] = [];
  let start = 0;
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 92 /* \ */ && quoted) i++;
    else if (c === 34 /* " */) quoted = !quoted;
    else if (c === 44 /* , */ && !quoted) {
      out.push(text.slice(start, i));
      start = i + 1;
    }
  }
  out.push(text.slice(start));
  return out;
}

function parseValue(kind: Kind | undefined, raw: string | undefined): CmcdValue | undefined {
  if (raw === undefined) return kind === undefined || kind === 'bool' ? true : undefined;
  if (raw.startsWith('"')) {
    if (raw.length < 2 || !raw.endsWith('"') || (kind !== undefined && kind !== 'str')) return undefined;
    const inner = raw.slice(1, -1);
    if (/(^|[^\\])"/.test(inner)) return undefined;
    return inner.replace(/\\(["\\])/g, '$1');
  }
  if (/^-?\d+(\.\d+)?$/.test(raw)) {
    const n = Number(raw);
    if (kind === 'int') return Number.isSafeInteger(n) ? n : undefined;
    if (kind === 'num' || kind === undefined) return n;
    return undefined;
  }
  if (kind === 'token' || kind === undefined) return /^[A-Za-z][A-Za-z0-9_.:/-]*$/.test(raw) ? raw : undefined;
  return undefined;
}

/** Adds the pairs of one CMCD string to `into`; returns how many were accepted. */
export function parseCmcdInto(text: string, into: Cmcd): number {
  if (text.length === 0 || text.length > MAX_CMCD_LENGTH) return 0;
  let accepted = 0;
  for (const pair of splitPairs(text)) {
    if (Object.keys(into).length >= MAX_KEYS) break;
    const trimmed = pair.trim();
    if (trimmed === '') continue;
    const eq = trimmed.indexOf('=');
    const key = eq === -1 ? trimmed : trimmed.slice(0, eq);
    if (!KEY.test(key)) continue;
    const kind = KEY_KINDS[key];
    if (kind === undefined && !key.includes('-') && !key.includes('.')) continue; // unknown, not custom
    const value = parseValue(kind, eq === -1 ? undefined : trimmed.slice(eq + 1));
    if (value === undefined) continue;
    if (kind === 'token' && !TOKENS[key]!.test(String(value))) continue;
    into[key] = value;
    accepted++;
  }
  return accepted;
}

/**
 * CMCD of one request: the query form wins when both are present (players send one or the
 * other). `query` is the raw (still URL-encoded) value of the `CMCD` argument.
 */
export function parseCmcd(query: string | undefined, headers: Record<string, string | string[] | undefined>): Cmcd | undefined {
  const out: Cmcd = {};
  if (query !== undefined && query !== '') {
    let decoded: string | undefined;
    try {
      decoded = decodeURIComponent(query.replace(/\+/g, ' '));
    } catch {
      decoded = undefined; // bad percent-encoding: ignore the query form
    }
    if (decoded !== undefined) parseCmcdInto(decoded, out);
  }
  if (Object.keys(out).length === 0) {
    for (const name of CMCD_HEADERS) {
      const h = headers[name];
      if (typeof h === 'string') parseCmcdInto(h, out);
    }
  }
  return Object.keys(out).length === 0 ? undefined : out;
}

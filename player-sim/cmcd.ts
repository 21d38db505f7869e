/**
 * CMCD (CTA-5004) as a player sends it. Keys are sorted, strings quoted, booleans sent as the
 * bare key when true and left out when false; bl and dl are rounded to 100 ms and mtp to
 * 100 kbit/s as the spec asks (coarse values also keep requests from being fingerprintable).
 * `v=1` is sent although the spec lets v1 clients omit it: the edges and aggregators here read
 * it to tell the version without guessing.
 */
export type CmcdMode = 'query' | 'headers' | 'off';

export interface CmcdData {
  /** Encoded bit rate of the object, kbit/s. */
  br?: number;
  /** Buffer length, ms. */
  bl?: number;
  /** Content id. */
  cid?: string;
  /** Object duration, ms. */
  d?: number;
  /** Deadline: how soon the object is needed, ms. */
  dl?: number;
  /** Measured throughput, kbit/s. */
  mtp?: number;
  /** Object type: m manifest, av muxed audio+video, v video, i init. */
  ot?: 'm' | 'a' | 'v' | 'av' | 'i' | 'c' | 'tt' | 'k' | 'o';
  /** Streaming format: h = HLS. */
  sf?: 'd' | 'h' | 's' | 'o';
  sid?: string;
  /** Stream type: v = VOD. */
  st?: 'v' | 'l';
  /** Startup or rebuffering. */
  su?: boolean;
  /** Top bit rate available, kbit/s. */
  tb?: number;
  /** Next object request, relative URL. */
  nor?: string;
  v?: number;
}

const TOKEN_KEYS = new Set(['ot', 'sf', 'st']);
const ROUND_100 = new Set(['bl', 'dl', 'mtp']);

/** Header each key belongs in (CTA-5004 §3.2). */
const HEADER_OF: Record<keyof CmcdData, 'CMCD-Object' | 'CMCD-Request' | 'CMCD-Session' | 'CMCD-Status'> = {
  br: 'CMCD-Object',
  d: 'CMCD-Object',
  ot: 'CMCD-Object',
  tb: 'CMCD-Object',
  bl: 'CMCD-Request',
  dl: 'CMCD-Request',
  mtp: 'CMCD-Request',
  nor: 'CMCD-Request',
  su: 'CMCD-Request',
  cid: 'CMCD-Session',
  sf: 'CMCD-Session',
  sid: 'CMCD-Session',
  st: 'CMCD-Session',
  v: 'CMCD-Session',
};

function pairs(data: CmcdData): [keyof CmcdData, string | undefined][] {
  const out: [keyof CmcdData, string | undefined][] = [];
  for (const key of (Object.keys(data) as (keyof CmcdData)[]).sort()) {
    const value = data[key];
    if (value === undefined || value === false) continue;
    if (value === true) out.push([key, undefined]);
    else if (typeof value === 'number') {
      if (!Number.isFinite(value)) continue;
      const n = ROUND_100.has(key) ? Math.round(value / 100) * 100 : Math.round(value);
      out.push([key, String(Math.max(0, n))]);
    } else if (TOKEN_KEYS.has(key)) out.push([key, value]);
    else out.push([key, `"${value.replace(/["\\]/g, (c) => `\\${c}`)}"`]);
  }
  return out;
}

export function serializeCmcd(data: CmcdData): string {
  return pairs(data)
    .map(([k, v]) => (v === undefined ? k : `${k}=${v}`))
    .join(',');
}

/** The URL with `CMCD=<encoded payload>` appended. */
export function withCmcdQuery(url: string, data: CmcdData): string {
  const payload = serializeCmcd(data);
  if (payload === '') return url;
  const hashAt = url.indexOf('#');
  const base = hashAt === -1 ? url : url.slice(0, hashAt);
  return `${base}${base.includes('?') ? '&' : '?'}CMCD=${encodeURIComponent(payload)}`;
}

export function cmcdHeaders(data: CmcdData): Record<string, string> {
  const groups: Record<string, string[]> = {};
  for (const [k, v] of pairs(data)) (groups[HEADER_OF[k]] ??= []).push(v === undefined ? k : `${k}=${v}`);
  const out: Record<string, string> = {};
  for (const [h, list] of Object.entries(groups)) out[h] = list.join(',');
  return out;
}

/** Relative reference from one URL to another (for `nor`): same directory → file name only. */
export function relativeRef(from: string, to: string): string {
  try {
    const a = new URL(from);
    const b = new URL(to);
    if (a.origin !== b.origin) return to;
    const dir = a.pathname.slice(0, a.pathname.lastIndexOf('/') + 1);
    const path = b.pathname.startsWith(dir) ? b.pathname.slice(dir.length) : b.pathname;
    return path; // the query (token) is the same for every object of a title: leave it out
  } catch {
    return to;
  }
}

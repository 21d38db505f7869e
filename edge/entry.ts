import type { OutgoingHttpHeaders } from 'node:http';
import type { Lookup } from './cache.ts';
import type { UpstreamCmsd } from './upstream.ts';

/** Per-entry overhead counted against the capacity besides the body (key, headers, bookkeeping). */
export const ENTRY_OVERHEAD_BYTES = 1024;
export const NEGATIVE_ENTRY_BYTES = 512;

interface EntryBase {
  key: string;
  /** When the content left the origin (ms since epoch): Age counts from here, across tiers. */
  bornAt: number;
  /** Soft purge: still servable as stale-if-error, but the next request revalidates upstream. */
  softPurged: boolean;
}

/**
 * What a 200 of an object is answered with before (or without) its body in memory: a miss being
 * streamed from upstream, a disk hit being read. An ObjectEntry is one with its body.
 */
export interface ObjectHead {
  key: string;
  bornAt: number;
  /** Body length; undefined only for a streamed miss whose upstream gave no Content-Length. */
  size: number | undefined;
  /** SHA-256 hex as declared (a miss) or verified (stored); undefined while a miss with none declared streams. */
  sha256: string | undefined;
  /** `"<sha256>"`, a strong validator (undefined with sha256). */
  etag: string | undefined;
  contentType: string;
  cacheControl: string;
  /**
   * Headers of a 200 hit, built once so the hit path only writes them. `age` is refreshed at most
   * once per second by `hitHeaders()`.
   */
  hit: OutgoingHttpHeaders & { age: string };
  hitAgeSec: number;
  /** CMSD-Dynamic of the tier above as it came with this fill: a miss answer appends this edge's Item to it. */
  upstreamCmsdDynamic: string | undefined;
}

export interface ObjectEntry extends EntryBase, ObjectHead {
  kind: 'object';
  body: Buffer;
  size: number;
  sha256: string;
  etag: string;
}

export interface NegativeEntry extends EntryBase {
  kind: 'missing';
}

export type Entry = ObjectEntry | NegativeEntry;

export function ageSec(entry: { bornAt: number }, now: number): number {
  const a = Math.floor((now - entry.bornAt) / 1000);
  return Math.max(a, 0);
}

/**
 * The 200-hit header object of `entry`, with a current Age and, when given, `cmsdDynamic` (the
 * edge's prebuilt CMSD-Dynamic, the same string between refreshes, so the check is one compare).
 */
export function hitHeaders(entry: ObjectHead, now: number, cmsdDynamic?: string): OutgoingHttpHeaders {
  const age = ageSec(entry, now);
  if (age !== entry.hitAgeSec) {
    entry.hitAgeSec = age;
    entry.hit.age = String(age);
  }
  if (cmsdDynamic !== undefined && entry.hit['cmsd-dynamic'] !== cmsdDynamic) entry.hit['cmsd-dynamic'] = cmsdDynamic;
  return entry.hit;
}

export interface ObjectHeadArgs {
  key: string;
  size: number | undefined;
  sha256: string | undefined;
  contentType: string;
  cacheControl: string;
  bornAt: number;
  edgeId: string;
  cacheStatusName: string;
  /**
   * Fixed fields of every answer (CORS with '*'): in the hit object they cost nothing per request,
   * and the server's own CORS step sees them there and adds nothing.
   */
  headers?: Readonly<Record<string, string>>;
  /** What the upstream said in CMSD: Static goes into every answer unchanged. */
  cmsd?: UpstreamCmsd;
}

export function makeObjectHead(args: ObjectHeadArgs): ObjectHead {
  const etag = args.sha256 === undefined ? undefined : `"${args.sha256}"`;
  return {
    key: args.key,
    size: args.size,
    sha256: args.sha256,
    etag,
    contentType: args.contentType,
    cacheControl: args.cacheControl,
    bornAt: args.bornAt,
    hitAgeSec: 0,
    upstreamCmsdDynamic: args.cmsd?.dynamic,
    hit: {
      'content-type': args.contentType,
      ...(args.size === undefined ? {} : { 'content-length': String(args.size) }),
      ...(etag === undefined ? {} : { etag }),
      'cache-control': args.cacheControl,
      'accept-ranges': 'bytes',
      age: '0',
      'x-edge-id': args.edgeId,
      'x-cache': 'HIT',
      'cache-status': `${args.cacheStatusName}; hit`,
      ...(args.cmsd?.static === undefined ? {} : { 'cmsd-static': args.cmsd.static }),
      ...args.headers,
    },
  };
}

export function makeObjectEntry(args: Omit<ObjectHeadArgs, 'size' | 'sha256'> & { body: Buffer; sha256: string }): ObjectEntry {
  const head = makeObjectHead({ ...args, size: args.body.length });
  return { ...head, kind: 'object', body: args.body, size: args.body.length, sha256: args.sha256, etag: head.etag!, softPurged: false };
}

export function entrySize(entry: Entry): number {
  return entry.kind === 'object' ? entry.body.length + ENTRY_OVERHEAD_BYTES : NEGATIVE_ENTRY_BYTES;
}

/** RFC 9211 Cache-Status for a lookup, spelled one way for /vod and /catalog.json. */
export function cacheStatusOf(name: string, lookup: Pick<Lookup, 'outcome' | 'fwd' | 'stored' | 'tier'> & { entry?: { kind: string } }): string {
  switch (lookup.outcome) {
    case 'HIT':
      return lookup.entry?.kind === 'missing' ? `${name}; hit; detail=negative` : lookup.tier === 'disk' ? `${name}; hit; detail=disk` : `${name}; hit`;
    case 'COALESCED':
      return `${name}; fwd=miss; collapsed`;
    case 'STALE':
      return `${name}; fwd=stale; detail=stale-if-error`;
    case 'MISS':
      return `${name}; fwd=${lookup.fwd}${lookup.stored ? '; stored' : ''}`;
  }
}

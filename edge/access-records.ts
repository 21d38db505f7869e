/**
 * Access records as they leave the edge (issue 15): a flush's responses become packs
 * (`EdgeAccessPack`, common/contracts.ts), one per partition of the access topic, each record a
 * tuple with no field names. Per response that is a short array and its share of one
 * JSON.stringify and one Kafka value, instead of an object, a JSON text and a message of its own.
 */
import {
  ACCESS_PACK_BYTES,
  ACCESS_PACK_MAX_RECORDS,
  type AccessTier,
  type EdgeAccessPack,
  type EdgeAccessTuple,
  titleOfAccessObject,
} from '../common/contracts.ts';
import { PATH_TOKEN_PREFIX, sessionOfToken } from '../common/token.ts';
import { type Cmcd, parseCmcdInto } from './cmcd.ts';

/** One response as the hit path leaves it: nothing parsed, nothing built. */
export interface PendingAccess {
  path: string;
  /** The raw CMCD query value (URL-encoded), else the CMCD-Session header, else undefined. */
  cmcd: string | undefined;
  encoded: boolean;
  /** The request URL when it carries a path token (`/t/<token>/…`), whose session wins over CMCD's. */
  tokenUrl?: string | undefined;
  bytes: number;
  tier: AccessTier;
  ts: number;
}

export interface AccessPackOut {
  /** The pack's JSON: one line of a Kafka value. */
  json: string;
  /** A session of the pack: keyed by it, the pack goes to every one of its sessions' partition. */
  key: string;
  records: number;
}

/**
 * The batch as packs: records grouped by the partition of their session (`partitionOf`; while
 * it is unknown, by session), each pack under ACCESS_PACK_MAX_RECORDS and about ACCESS_PACK_BYTES.
 * Responses with no CMCD session or not under /vod/<title>/ are counted, not packed.
 */
export function packAccesses(
  batch: readonly PendingAccess[],
  edge: string,
  partitionOf: (sessionId: string) => number | undefined,
): { packs: AccessPackOut[]; noSession: number; badPath: number } {
  const packs: AccessPackOut[] = [];
  const open = new Map<number | string, { key: string; records: EdgeAccessTuple[]; bytes: number }>();
  const emit = (g: { key: string; records: EdgeAccessTuple[] }) => {
    const pack: EdgeAccessPack = { edge, records: g.records };
    packs.push({ json: JSON.stringify(pack), key: g.key, records: g.records.length });
  };
  let noSession = 0;
  let badPath = 0;
  for (const p of batch) {
    const sessionId = sessionOfUrlToken(p.tokenUrl) ?? sessionOfCmcd(p.cmcd, p.encoded);
    if (sessionId === undefined) {
      noSession++;
      continue;
    }
    if (titleOfAccessObject(p.path) === undefined) {
      badPath++;
      continue;
    }
    const object = p.path.length > 1_024 ? p.path.slice(0, 1_024) : p.path;
    const at = partitionOf(sessionId) ?? sessionId;
    let g = open.get(at);
    if (g === undefined) open.set(at, (g = { key: sessionId, records: [], bytes: 0 }));
    g.records.push([sessionId, object, p.bytes, p.tier, p.ts]);
    // Numbers, tier and punctuation take under 40 characters.
    g.bytes += sessionId.length + object.length + 40;
    if (g.records.length >= ACCESS_PACK_MAX_RECORDS || g.bytes >= ACCESS_PACK_BYTES) {
      emit(g);
      open.delete(at);
    }
  }
  for (const g of open.values()) emit(g);
  return { packs, noSession, badPath };
}

/**
 * The steering session a path token names (common/token.ts): signed by steering, so it is the
 * session of the decision whichever player plays, where a CMCD `sid` is what the player made up.
 */
function sessionOfUrlToken(url: string | undefined): string | undefined {
  if (url === undefined) return undefined;
  const end = url.indexOf('/', PATH_TOKEN_PREFIX.length);
  return end === -1 ? undefined : sessionOfToken(url.slice(PATH_TOKEN_PREFIX.length, end));
}

/**
 * `sid` found by its spelling alone, as players write it (`sid="…"`, percent-encoded with
 * encodeURIComponent in the query form): a sixth of a full CMCD parse. null = not this plain
 * form (other escaping, odd characters): the caller parses in full.
 */
function plainSid(text: string, encoded: boolean): string | undefined | null {
  const open = encoded ? 'sid%3D%22' : 'sid="';
  const i = text.indexOf(open);
  if (i === -1) return text.includes('sid') ? null : undefined;
  const sep = encoded ? '%2C' : ',';
  if (i !== 0 && !(i >= sep.length && text.startsWith(sep, i - sep.length))) return null;
  const from = i + open.length;
  const to = text.indexOf(encoded ? '%22' : '"', from);
  if (to <= from || to - from > 128) return null;
  const sid = text.slice(from, to);
  return /^[A-Za-z0-9._:-]+$/.test(sid) ? sid : null;
}

/** The CMCD `sid` of raw CMCD text (query form still URL-encoded), or undefined. */
export function sessionOfCmcd(text: string | undefined, encoded: boolean): string | undefined {
  if (text === undefined || text === '') return undefined;
  const plain = plainSid(text, encoded);
  if (plain !== null) return plain;
  return fullSid(text, encoded);
}

function fullSid(text: string, encoded: boolean): string | undefined {
  let plain = text;
  if (encoded) {
    try {
      plain = decodeURIComponent(text.replace(/\+/g, ' '));
    } catch {
      return undefined;
    }
  }
  const into: Cmcd = {};
  parseCmcdInto(plain, into);
  const sid = into.sid;
  return typeof sid === 'string' && sid.length > 0 && sid.length <= 128 ? sid : undefined;
}

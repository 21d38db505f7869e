import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Edge admission: every heartbeat is signed with HMAC-SHA256 over (edge id, timestamp, nonce,
 * body bytes) by a key of its own, `HMAC(K, "ocdn-edge-v1|" + id)` derived from the cluster's
 * edge key K. Steering holds only K and derives the same per-id key, so a beat for `edge-1`
 * verifies only under edge-1's key: a key provisioned to one edge cannot sign as another id.
 * The signature covers the raw bytes, so steering checks it before parsing anything.
 *
 * HMAC rather than mTLS: nothing to issue, rotate or revoke per edge, no TLS on the player-facing
 * port, a replay window per message (mTLS authenticates a connection, not a beat), one HMAC per
 * beat per second.
 */

export const EDGE_AUTH_HEADERS = {
  id: 'x-ocdn-edge-id',
  timestamp: 'x-ocdn-timestamp',
  nonce: 'x-ocdn-nonce',
  signature: 'x-ocdn-signature',
} as const;

/** A cluster edge key must be at least this long (cluster up makes 32 random bytes). */
export const MIN_EDGE_KEY_LENGTH = 16;
export const NONCE_PATTERN = /^[A-Za-z0-9_-]{16,64}$/;
const SIGNATURE_PATTERN = /^[0-9a-f]{64}$/;
const TIMESTAMP_PATTERN = /^[0-9]{1,16}$/;

/** The key edge `id` signs with. */
export function deriveEdgeKey(clusterKey: string, id: string): Buffer {
  return createHmac('sha256', clusterKey).update(`ocdn-edge-v1|${id}`).digest();
}

function mac(key: Buffer, id: string, timestamp: string, nonce: string, body: Buffer | string): Buffer {
  return createHmac('sha256', key).update(`v1\n${id}\n${timestamp}\n${nonce}\n`).update(body).digest();
}

/** The headers that sign one request body as edge `id`, fresh nonce and timestamp each call. */
export function signHeartbeat(key: Buffer, id: string, body: string, now = Date.now()): Record<string, string> {
  const timestamp = String(now);
  const nonce = randomBytes(18).toString('base64url');
  return {
    [EDGE_AUTH_HEADERS.id]: id,
    [EDGE_AUTH_HEADERS.timestamp]: timestamp,
    [EDGE_AUTH_HEADERS.nonce]: nonce,
    [EDGE_AUTH_HEADERS.signature]: mac(key, id, timestamp, nonce, body).toString('hex'),
  };
}

export type AdmissionRefusal = 'unsigned' | 'malformed' | 'bad-signature' | 'stale' | 'replay' | 'replay-memory-full';

export type AdmissionRefused = { ok: false; reason: AdmissionRefusal; message: string };
export interface SignedHeaders {
  ok: true;
  id: string;
  timestamp: string;
  nonce: string;
  signature: string;
}

const one = (v: string | string[] | undefined) => (Array.isArray(v) ? undefined : v);

/**
 * Checks a heartbeat's signature and freshness. A beat is fresh when its timestamp is within
 * `skewMs` of our clock and its nonce was not seen among the beats accepted in that window; the
 * nonce memory holds only beats whose signature verified, and is bounded (`maxNonces`).
 */
export class HeartbeatVerifier {
  private readonly keys = new Map<string, Buffer>();
  /** nonce → when it may be forgotten; insertion order is close to expiry order. */
  private readonly nonces = new Map<string, number>();
  private readonly skewMs: number;
  private readonly maxNonces: number;
  private readonly now: () => number;

  constructor(
    private readonly clusterKey: string,
    opts: { skewMs?: number; maxNonces?: number; now?: () => number } = {},
  ) {
    this.skewMs = opts.skewMs ?? 30_000;
    this.maxNonces = opts.maxNonces ?? 200_000;
    this.now = opts.now ?? Date.now;
  }

  get rememberedNonces(): number {
    return this.nonces.size;
  }

  /**
   * The signature headers of a request, checked for form only: an unsigned or malformed beat is
   * refused before its body is read.
   */
  headers(headers: Record<string, string | string[] | undefined>): SignedHeaders | AdmissionRefused {
    const id = one(headers[EDGE_AUTH_HEADERS.id]);
    const timestamp = one(headers[EDGE_AUTH_HEADERS.timestamp]);
    const nonce = one(headers[EDGE_AUTH_HEADERS.nonce]);
    const signature = one(headers[EDGE_AUTH_HEADERS.signature]);
    const names = Object.values(EDGE_AUTH_HEADERS).join(', ');
    if (id === undefined && timestamp === undefined && nonce === undefined && signature === undefined)
      return refuse('unsigned', `unsigned heartbeat: sign it with the cluster's edge key (headers ${names})`);
    if (id === undefined || timestamp === undefined || nonce === undefined || signature === undefined)
      return refuse('malformed', `heartbeat signature incomplete: each of ${names} is required, once`);
    if (!/^[A-Za-z0-9._-]{1,64}$/.test(id) || !TIMESTAMP_PATTERN.test(timestamp) || !NONCE_PATTERN.test(nonce) || !SIGNATURE_PATTERN.test(signature))
      return refuse('malformed', 'heartbeat signature headers malformed (id: a label, timestamp: ms, nonce: 16-64 base64url, signature: 64 hex)');
    return { ok: true, id, timestamp, nonce, signature };
  }

  /** Checks the signature over the raw body, then freshness; remembers the nonce of a beat that passes. */
  verify(h: SignedHeaders, body: Buffer): { ok: true; id: string } | AdmissionRefused {
    const expected = mac(this.keyOf(h.id), h.id, h.timestamp, h.nonce, body);
    if (!timingSafeEqual(expected, Buffer.from(h.signature, 'hex')))
      return refuse('bad-signature', `heartbeat signature does not verify under the key of edge "${h.id}"`);
    const now = this.now();
    const ts = Number(h.timestamp);
    if (Math.abs(now - ts) > this.skewMs)
      return refuse('stale', `heartbeat timestamp is ${Math.round((now - ts) / 1000)} s off steering's clock (window ±${this.skewMs / 1000} s)`);
    this.forgetExpired(now);
    if (this.nonces.has(h.nonce)) return refuse('replay', 'heartbeat replayed: its nonce was already used');
    if (this.nonces.size >= this.maxNonces)
      return refuse('replay-memory-full', `too many heartbeats within ${this.skewMs / 1000} s (${this.maxNonces} nonces remembered)`);
    // Past ts + skew the timestamp check refuses the beat anyway.
    this.nonces.set(h.nonce, ts + this.skewMs);
    return { ok: true, id: h.id };
  }

  private keyOf(id: string): Buffer {
    let k = this.keys.get(id);
    if (k === undefined) {
      k = deriveEdgeKey(this.clusterKey, id);
      // Bounded: ids come from the network before their signature is checked.
      if (this.keys.size >= 4_096) this.keys.clear();
      this.keys.set(id, k);
    }
    return k;
  }

  private forgetExpired(now: number): void {
    for (const [n, until] of this.nonces) {
      if (until > now) break;
      this.nonces.delete(n);
    }
  }
}

function refuse(reason: AdmissionRefusal, message: string): AdmissionRefused {
  return { ok: false, reason, message };
}

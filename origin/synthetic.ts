import { createCipheriv, createHash } from 'node:crypto';
import type { CatalogTitle } from '../common/contracts.ts';
import { ErrorCodes, OcdnError } from '../common/errors.ts';

/**
 * Synthetic HLS segments: no video inside, but sizes and bytes behave like a real VBR encode
 * and are a pure function of (title, rendition, index) plus the title's timing, so an edge, a
 * player or a test can regenerate any segment and check what it was served byte for byte.
 */

/** What determines a rendition's segments. `bitrate` is the ladder's average (bits/s). */
export interface SyntheticRendition {
  title: string;
  rendition: string;
  bitrate: number;
  durationSec: number;
  segmentSec: number;
}

export const TS_PACKET = 188;
const TS_SYNC = 0x47;

/**
 * VBR model. Segment size = bitrate × duration × factor. The factor follows a per-title "scene
 * complexity" (AR(1), so busy scenes last several segments and hit every rendition at once)
 * plus a little per-rendition noise, and is scaled so a rendition averages exactly its
 * bitrate. Apple's spec allows VOD peaks of 200% of the average; we stay inside [0.4, 2.0].
 */
export const VBR = { sigma: 0.3, correlation: 0.7, noise: 0.08, rawMin: 0.5, rawMax: 1.8, min: 0.4, max: 2.0 } as const;

/** Durations of a title's segments: all `segmentSec` but a shorter last one. Millisecond precision. */
export function segmentDurations(durationSec: number, segmentSec: number): number[] {
  if (!(durationSec > 0) || !(segmentSec > 0)) {
    throw new OcdnError(ErrorCodes.CONFIG, `duration and segment length must be positive (got ${durationSec}s / ${segmentSec}s)`);
  }
  const count = Math.ceil(durationSec / segmentSec - 1e-9);
  const out = new Array<number>(count).fill(segmentSec);
  out[count - 1] = Math.round((durationSec - (count - 1) * segmentSec) * 1000) / 1000;
  return out;
}

function hashOf(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}

/** A standard normal draw from a hash: Box–Muller over two 32-bit words. */
function normalFrom(digest: Buffer): number {
  const u1 = (digest.readUInt32BE(0) + 1) / 4_294_967_297; // never 0: log(0) = -∞
  const u2 = digest.readUInt32BE(4) / 4_294_967_296;
  return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
}

const complexityCache = new Map<string, number[]>();
const sizeCache = new Map<string, number[]>();
const CACHE_LIMIT = 512;

function remember<T>(cache: Map<string, T>, key: string, make: () => T): T {
  let v = cache.get(key);
  if (v === undefined) {
    v = make();
    if (cache.size >= CACHE_LIMIT) cache.delete(cache.keys().next().value!);
    cache.set(key, v);
  }
  return v;
}

/** The title's scene complexity per segment, shared by all renditions (mean 0, sd 1). */
function complexity(title: string, count: number): number[] {
  return remember(complexityCache, `${title}\n${count}`, () => {
    const out: number[] = [];
    const rho = VBR.correlation;
    let c = normalFrom(hashOf(`ocdn-scene-v1\n${title}\n0`));
    for (let i = 0; i < count; i++) {
      if (i > 0) c = rho * c + Math.sqrt(1 - rho * rho) * normalFrom(hashOf(`ocdn-scene-v1\n${title}\n${i}`));
      out.push(c);
    }
    return out;
  });
}

/** Byte size of every segment of a rendition (each a whole number of 188-byte TS packets). */
export function segmentSizes(r: SyntheticRendition): number[] {
  const key = `${r.title}\n${r.rendition}\n${r.bitrate}\n${r.durationSec}\n${r.segmentSec}`;
  return remember(sizeCache, key, () => {
    const durations = segmentDurations(r.durationSec, r.segmentSec);
    const scene = complexity(r.title, durations.length);
    const raw = durations.map((_, i) => {
      const noise = VBR.noise * normalFrom(hashOf(`ocdn-noise-v1\n${r.title}\n${r.rendition}\n${i}`));
      const f = Math.exp(VBR.sigma * scene[i]! + noise - (VBR.sigma * VBR.sigma) / 2);
      return Math.min(VBR.rawMax, Math.max(VBR.rawMin, f));
    });
    // Scale so the rendition's total bytes are exactly bitrate × duration.
    const weighted = raw.reduce((sum, f, i) => sum + f * durations[i]!, 0);
    const scale = r.durationSec / weighted;
    return raw.map((f, i) => {
      const factor = Math.min(VBR.max, Math.max(VBR.min, f * scale));
      const bytes = (r.bitrate / 8) * durations[i]! * factor;
      return Math.max(1, Math.round(bytes / TS_PACKET)) * TS_PACKET;
    });
  });
}

export function segmentCount(r: Pick<SyntheticRendition, 'durationSec' | 'segmentSec'>): number {
  return segmentDurations(r.durationSec, r.segmentSec).length;
}

export function segmentSize(r: SyntheticRendition, index: number): number {
  const size = segmentSizes(r)[index];
  if (size === undefined) throw new OcdnError(ErrorCodes.NOT_FOUND, `${r.title}/${r.rendition} has no segment ${index}`);
  return size;
}

/**
 * BANDWIDTH (peak segment bit rate, rounded up) and AVERAGE-BANDWIDTH for the master playlist.
 * The average is the ladder's bitrate by construction (to within TS packet rounding).
 */
export function renditionBandwidth(r: SyntheticRendition): { bandwidth: number; averageBandwidth: number } {
  const sizes = segmentSizes(r);
  const durations = segmentDurations(r.durationSec, r.segmentSec);
  const peak = Math.max(...sizes.map((s, i) => (s * 8) / durations[i]!));
  return { bandwidth: Math.ceil(peak), averageBandwidth: Math.round(r.bitrate) };
}

/**
 * The bytes of one segment. An AES-128-CTR keystream keyed by a hash of (title, rendition,
 * index) gives incompressible, well-spread bytes at native speed (GB/s), which matters when a
 * seed writes tens of GB. Every 188 bytes starts an MPEG-TS packet header (sync 0x47, PID
 * 0x100, continuity counter) so tools that sniff TS framing accept it; the payload is noise.
 */
export function syntheticSegment(r: SyntheticRendition, index: number): Buffer {
  const size = segmentSize(r, index);
  const seed = hashOf(`ocdn-bytes-v1\n${r.title}\n${r.rendition}\n${index}`);
  const cipher = createCipheriv('aes-128-ctr', seed.subarray(0, 16), seed.subarray(16, 32));
  const buf = cipher.update(Buffer.alloc(size));
  for (let p = 0, off = 0; off < size; p++, off += TS_PACKET) {
    buf[off] = TS_SYNC;
    buf[off + 1] = (p === 0 ? 0x40 : 0x00) | 0x01; // payload_unit_start on the first packet; PID high bits
    buf[off + 2] = 0x00; // PID low bits → 0x100
    buf[off + 3] = 0x10 | (p & 0x0f); // payload only; continuity counter
  }
  return buf;
}

export function sha256Hex(body: Uint8Array | string): string {
  return createHash('sha256').update(body).digest('hex');
}

/** Checks bytes someone was served against what the generator makes. */
export function verifySyntheticSegment(r: SyntheticRendition, index: number, body: Uint8Array): { ok: true } | { ok: false; reason: string } {
  const expected = syntheticSegment(r, index);
  if (body.length !== expected.length) return { ok: false, reason: `size ${body.length}, expected ${expected.length}` };
  if (!expected.equals(body)) return { ok: false, reason: 'bytes differ' };
  return { ok: true };
}

/** The generator input for a rendition of a catalog title (synthetic titles only). */
export function syntheticFromCatalog(title: CatalogTitle, rendition: string): SyntheticRendition {
  if (title.mode !== 'synthetic')
    throw new OcdnError(ErrorCodes.BAD_REQUEST, `${title.id} was encoded with ${title.mode}; only synthetic titles can be regenerated`);
  const r = title.renditions.find((x) => x.name === rendition);
  if (!r) throw new OcdnError(ErrorCodes.NOT_FOUND, `${title.id} has no rendition ${rendition}`);
  return { title: title.id, rendition: r.name, bitrate: r.averageBandwidth, durationSec: title.durationSec, segmentSec: title.segmentSec };
}

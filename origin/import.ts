import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, readFile, realpath, stat } from 'node:fs/promises';
import { join, sep } from 'node:path';
import type { Readable } from 'node:stream';
import { CopyObjectCommand, GetObjectCommand, HeadObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import * as HLS from 'hls-parser';
import { type Catalog, type CatalogRendition, type CatalogTitle, contentKeys, type HashManifest, TITLE_ID_PATTERN } from '../common/contracts.ts';
import { ErrorCodes, OcdnError } from '../common/errors.ts';
import { contentTypeFor, MAX_PATH_LENGTH } from '../edge/path.ts';
import { buildCatalog, serializeCatalog } from './catalog.ts';
import { updateCatalog } from './catalog-store.ts';
import { SHA256_META } from './reader.ts';
import { ensureBucket, forEachBounded, putObjectIfChanged } from './seed.ts';
import { sha256Hex } from './synthetic.ts';
import { DEFAULT_MASTER } from './catalog.ts';

/**
 * `ocdn content import`: registers an HLS package made by someone else (ffmpeg, a packager) as
 * a title, so steering answers for it. The package is checked before anything is registered:
 * every URI relative and inside the title folder (edges serve `/vod/{title}/...` only, and the
 * token travels in that path, so an absolute or root-relative URI would leave the title or
 * lose the token), every referenced object present, byte ranges inside their files. Then every
 * object is hashed: uploads carry the SHA-256 in their metadata (as seed writes them, so edges
 * verify fills), and `vod/{title}/hashes.json` lists them all, pinned by its own hash in
 * catalog.json, so what was registered can be checked later without growing the catalog.
 */

/** Bounds on what one package may make us read: a hostile or broken package fails, it does not exhaust memory. */
export const IMPORT_LIMITS = { maxPlaylistBytes: 4 << 20, maxPlaylists: 256, maxObjects: 200_000 } as const;
/** Problems listed in the error message; the rest are in `details`. */
const LISTED_PROBLEMS = 20;

const PLAYLIST_CACHE = 'public, max-age=300';
const MEDIA_CACHE = 'public, max-age=31536000, immutable';
const FMP4_EXT = /\.(m4s|mp4|m4v|m4a|cmfv|cmfa|cmft)$/i;
const SAFE_SEGMENT = /^[A-Za-z0-9._-]+$/;

export interface ImportProgress {
  total: number;
  done: number;
  uploaded: number;
  skipped: number;
  bytes: number;
  key: string;
}

export interface ImportOptions {
  client: S3Client;
  bucket: string;
  endpoint?: string;
  title: string;
  /** Upload the package from this folder; without it the package must already be under vod/{title}/. */
  fromDir?: string;
  /** The master playlist's file name at the top of the package (default master.m3u8). */
  master?: string;
  /** Popularity rank; default: after every title in the catalog (a re-import keeps its rank). */
  rank?: number;
  concurrency?: number;
  checkTimeoutMs?: number;
  onProgress?: (p: ImportProgress) => void;
  signal?: AbortSignal;
}

export interface ImportResult {
  title: CatalogTitle;
  catalog: Catalog;
  /** Objects of the package (playlists, segments, init sections, keys), the master copy and hashes.json included. */
  objects: number;
  uploaded: number;
  skipped: number;
  /** Bytes uploaded (or, registering in place, metadata rewritten) this run. */
  bytes: number;
  /** Bytes of every object of the title. */
  totalBytes: number;
  /** Whether catalog.json was written (false: it already had this entry). */
  catalogWritten: boolean;
  elapsedMs: number;
}

// ---- URIs ---------------------------------------------------------------------------------

/**
 * `uri`, found in the playlist at title-relative path `from`, as a title-relative path; or
 * why it cannot be served from the title folder.
 */
export function resolveInside(uri: string, from: string): { path: string } | { reason: string } {
  const u = uri.trim();
  if (u === '') return { reason: 'empty URI' };
  if (/^[a-z][a-z0-9+.-]*:/i.test(u)) return { reason: 'absolute URL: edges serve the title folder only' };
  if (u.startsWith('//')) return { reason: 'network-path reference to another host' };
  if (u.startsWith('/')) return { reason: 'root-relative: resolving it drops the title folder and the /t/<token>/ path the token travels in' };
  if (/[?#]/.test(u)) return { reason: 'query or fragment: objects are addressed by path alone' };
  if (/[%\\]/.test(u)) return { reason: 'percent-encoded or backslash characters (edges refuse them)' };
  const parts = from.split('/').slice(0, -1);
  for (const seg of u.split('/')) {
    if (seg === '') return { reason: 'empty path segment' };
    if (seg === '.') continue;
    if (seg === '..') {
      if (parts.length === 0) return { reason: 'escapes the title folder with ..' };
      parts.pop();
      continue;
    }
    if (!SAFE_SEGMENT.test(seg)) return { reason: 'characters outside A-Z a-z 0-9 . _ - (edges refuse them)' };
    parts.push(seg);
  }
  if (parts.length === 0) return { reason: 'names the title folder, not an object' };
  return { path: parts.join('/') };
}

// ---- where the package is -----------------------------------------------------------------

interface PackageSource {
  /** For messages. */
  where: string;
  /** Size in bytes, or undefined when the object does not exist. */
  size(path: string): Promise<number | undefined>;
  read(path: string, maxBytes: number): Promise<Buffer>;
  stream(path: string): Promise<Readable>;
}

function dirSource(dir: string): PackageSource {
  let root: Promise<string> | undefined;
  const full = async (path: string) => {
    root ??= realpath(dir);
    const base = await root;
    const file = join(base, ...path.split('/'));
    // A symlink may point anywhere on this machine: upload only what really lives in the folder.
    const st = await lstat(file).catch(() => undefined);
    if (st?.isSymbolicLink()) {
      const target = await realpath(file);
      if (!target.startsWith(base + sep)) throw new OcdnError(ErrorCodes.BAD_REQUEST, `${path} is a symbolic link out of ${dir}`);
    }
    return file;
  };
  return {
    where: dir,
    async size(path) {
      const st = await stat(await full(path)).catch(() => undefined);
      return st?.isFile() ? st.size : undefined;
    },
    async read(path, maxBytes) {
      const file = await full(path);
      const st = await stat(file);
      if (st.size > maxBytes) throw new OcdnError(ErrorCodes.BAD_PLAYLIST, `${path} is ${st.size} bytes, over the ${maxBytes}-byte playlist limit`);
      return readFile(file);
    },
    async stream(path) {
      return createReadStream(await full(path));
    },
  };
}

type SdkError = Error & { $metadata?: { httpStatusCode?: number } };
const isMissing = (e: SdkError) => e.$metadata?.httpStatusCode === 404 || e.name === 'NotFound' || e.name === 'NoSuchKey';

function bucketSource(client: S3Client, bucket: string, title: string): PackageSource {
  const key = (path: string) => `vod/${title}/${path}`;
  return {
    where: `s3://${bucket}/vod/${title}/`,
    async size(path) {
      try {
        return (await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key(path) }))).ContentLength;
      } catch (err) {
        if (isMissing(err as SdkError)) return undefined;
        throw err;
      }
    },
    async read(path, maxBytes) {
      const out = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key(path) }));
      if ((out.ContentLength ?? 0) > maxBytes) {
        (out.Body as Readable | undefined)?.destroy();
        throw new OcdnError(ErrorCodes.BAD_PLAYLIST, `${path} is ${out.ContentLength} bytes, over the ${maxBytes}-byte playlist limit`);
      }
      return Buffer.from(await out.Body!.transformToByteArray());
    },
    async stream(path) {
      return (await client.send(new GetObjectCommand({ Bucket: bucket, Key: key(path) }))).Body as Readable;
    },
  };
}

// ---- reading the package ------------------------------------------------------------------

function parse(text: string, path: string): HLS.types.MasterPlaylist | HLS.types.MediaPlaylist {
  if (!/^\uFEFF?#EXTM3U[ \t]*\r?(\n|$)/.test(text)) throw new OcdnError(ErrorCodes.BAD_PLAYLIST, `${path} does not start with #EXTM3U`);
  // Lenient, as players are (player-sim/playlist.ts): strict mode refuses what ffmpeg writes.
  const before = HLS.getOptions();
  HLS.setOptions({ strictMode: false, silent: true });
  try {
    return HLS.parse(text) as HLS.types.MasterPlaylist | HLS.types.MediaPlaylist;
  } catch (err) {
    throw new OcdnError(ErrorCodes.BAD_PLAYLIST, `${path} does not parse: ${(err as Error).message}`);
  } finally {
    HLS.setOptions(before);
  }
}

type ObjectKind = 'playlist' | 'media';
interface Range {
  offset: number;
  length: number;
  where: string;
}

interface MediaFacts {
  path: string;
  segments: number;
  durationSec: number;
  targetSec: number;
  fmp4: boolean;
  byterange: boolean;
  /** Per segment: [object path, range or undefined]; init sections apart. */
  parts: Array<{ path: string; range?: { offset: number; length: number } }>;
  inits: Array<{ path: string; range?: { offset: number; length: number } }>;
}

/** Everything the package references, found by walking master → media playlists; problems collected, not thrown one by one. */
class PackageWalk {
  readonly objects = new Map<string, ObjectKind>();
  readonly problems: string[] = [];
  readonly ranges: Range[] = [];

  ref(uri: string | undefined, from: string, kind: ObjectKind, what: string): string | undefined {
    if (typeof uri !== 'string') {
      this.problems.push(`${from}: ${what} without URI`);
      return undefined;
    }
    const r = resolveInside(uri, from);
    if ('reason' in r) {
      this.problems.push(`${from}: "${uri.slice(0, 200)}" (${r.reason})`);
      return undefined;
    }
    if (this.objects.size >= IMPORT_LIMITS.maxObjects && !this.objects.has(r.path))
      throw new OcdnError(ErrorCodes.BAD_REQUEST, `the package references more than ${IMPORT_LIMITS.maxObjects} objects`);
    this.objects.set(r.path, this.objects.get(r.path) === 'playlist' ? 'playlist' : kind);
    return r.path;
  }

  media(p: HLS.types.MediaPlaylist, path: string): MediaFacts {
    const facts: MediaFacts = {
      path,
      segments: p.segments.length,
      durationSec: 0,
      targetSec: Number(p.targetDuration) || 0,
      fmp4: false,
      byterange: false,
      parts: [],
      inits: [],
    };
    if (p.segments.length === 0) this.problems.push(`${path}: no segments`);
    if (!p.endlist) this.problems.push(`${path}: no EXT-X-ENDLIST (a live playlist; only VOD packages can be imported)`);
    const rangeEnd = new Map<string, number>();
    const seenMaps = new Set<string>();
    const seenKeys = new Set<string>();
    p.segments.forEach((s, i) => {
      if (!(typeof s.duration === 'number' && Number.isFinite(s.duration) && s.duration > 0))
        this.problems.push(`${path}: segment ${i} has no valid EXTINF duration`);
      else facts.durationSec += s.duration;
      const seg = this.ref(s.uri, path, 'media', `segment ${i}`);
      if (seg && FMP4_EXT.test(seg)) facts.fmp4 = true;
      let range: { offset: number; length: number } | undefined;
      if (s.byterange && seg) {
        facts.byterange = true;
        const length = Number(s.byterange.length);
        const offset = s.byterange.offset !== undefined ? Number(s.byterange.offset) : rangeEnd.get(seg);
        if (!(Number.isInteger(length) && length > 0) || offset === undefined || !(Number.isInteger(offset) && offset >= 0)) {
          this.problems.push(`${path}: segment ${i} has an invalid EXT-X-BYTERANGE`);
        } else {
          range = { offset, length };
          rangeEnd.set(seg, offset + length);
          this.ranges.push({ offset, length, where: `${path} segment ${i} → ${seg}` });
        }
      }
      if (seg) facts.parts.push({ path: seg, range });
      if (s.map) {
        facts.fmp4 = true;
        const mapKey = `${s.map.uri}@${s.map.byterange?.offset ?? ''}:${s.map.byterange?.length ?? ''}`;
        if (!seenMaps.has(mapKey)) {
          seenMaps.add(mapKey);
          const init = this.ref(s.map.uri, path, 'media', `EXT-X-MAP of segment ${i}`);
          if (init) {
            const r = s.map.byterange;
            const mr = r ? { offset: Number(r.offset ?? 0), length: Number(r.length) } : undefined;
            if (mr) this.ranges.push({ ...mr, where: `${path} EXT-X-MAP → ${init}` });
            facts.inits.push({ path: init, range: mr });
          }
        }
      }
      if (s.key && s.key.method !== 'NONE' && s.key.uri !== undefined && !seenKeys.has(s.key.uri)) {
        seenKeys.add(s.key.uri);
        this.ref(s.key.uri, path, 'media', `EXT-X-KEY of segment ${i}`);
      }
    });
    facts.targetSec ||= Math.ceil(Math.max(0, ...p.segments.map((s) => s.duration || 0)));
    return facts;
  }

  fail(title: string): void {
    if (this.problems.length === 0) return;
    const shown = this.problems.slice(0, LISTED_PROBLEMS);
    const more = this.problems.length > shown.length ? `; and ${this.problems.length - shown.length} more` : '';
    throw new OcdnError(
      ErrorCodes.BAD_PLAYLIST,
      `refusing to import ${title}: ${this.problems.length} problem${this.problems.length === 1 ? '' : 's'} in the package: ${shown.join('; ')}${more}`,
      { details: { problems: this.problems.slice(0, 1_000) } },
    );
  }
}

function renditionName(uri: string, taken: Set<string>): string {
  const parts = uri.split('/');
  const base = parts.length >= 2 ? parts[parts.length - 2]! : parts[0]!.replace(/\.m3u8$/i, '');
  let name = base;
  for (let n = 2; taken.has(name); n++) name = `${base}-${n}`;
  taken.add(name);
  return name;
}

/** Same entry but for importedAt, whatever the key order (one side was parsed from JSON). */
function sameEntry(a: CatalogTitle, b: CatalogTitle): boolean {
  const canon = (v: unknown): unknown =>
    Array.isArray(v)
      ? v.map(canon)
      : v && typeof v === 'object'
        ? Object.fromEntries(
            Object.entries(v)
              .sort(([x], [y]) => (x < y ? -1 : 1))
              .map(([k, x]) => [k, canon(x)]),
          )
        : v;
  return JSON.stringify(canon({ ...a, importedAt: '' })) === JSON.stringify(canon({ ...b, importedAt: '' }));
}

/** Hashes a stream without holding it: segments may be large. */
async function hashStream(body: Readable): Promise<{ sha256: string; size: number }> {
  const h = createHash('sha256');
  let size = 0;
  for await (const chunk of body) {
    h.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { sha256: h.digest('hex'), size };
}

function checkOptions(opts: ImportOptions): { master: string; concurrency: number } {
  const id = opts.title;
  if (!new RegExp(TITLE_ID_PATTERN).test(id) || id === '.' || id === '..')
    throw new OcdnError(ErrorCodes.CONFIG, `title "${id.slice(0, 140)}" must be 1-128 characters of A-Z a-z 0-9 . _ - (not . or ..)`);
  const master = opts.master ?? DEFAULT_MASTER;
  if (!SAFE_SEGMENT.test(master) || master === '.' || master === '..' || !/\.m3u8$/i.test(master))
    throw new OcdnError(
      ErrorCodes.CONFIG,
      `--master "${master.slice(0, 140)}" must be a .m3u8 file name at the top of the package (A-Z a-z 0-9 . _ -, no folders): its URIs are relative to where master.m3u8 will be`,
    );
  if (opts.rank !== undefined && !(Number.isInteger(opts.rank) && opts.rank >= 1))
    throw new OcdnError(ErrorCodes.CONFIG, `rank must be a whole number ≥ 1 (got ${opts.rank})`);
  return { master, concurrency: opts.concurrency ?? 8 };
}

/**
 * Checks the package, uploads it (with `fromDir`) or hashes it in place, writes hashes.json,
 * and adds the title to catalog.json. Nothing is written to the bucket before the package
 * passed every check; catalog.json is written last, so steering never answers for a title
 * whose objects are not all there.
 */
export async function importTitle(opts: ImportOptions): Promise<ImportResult> {
  const started = Date.now();
  const { master, concurrency } = checkOptions(opts);
  const id = opts.title;
  await ensureBucket(opts.client, opts.bucket, { endpoint: opts.endpoint, timeoutMs: opts.checkTimeoutMs, create: opts.fromDir !== undefined });
  const src = opts.fromDir !== undefined ? dirSource(opts.fromDir) : bucketSource(opts.client, opts.bucket, id);

  // ---- walk and check -------------------------------------------------------------------
  const masterSize = await src.size(master);
  if (masterSize === undefined)
    throw new OcdnError(
      ErrorCodes.NOT_FOUND,
      `no master playlist ${master} in ${src.where}${opts.fromDir === undefined ? ' (upload the package there first, or use --from-dir)' : ''}`,
    );
  const masterBytes = await src.read(master, IMPORT_LIMITS.maxPlaylistBytes);
  const parsedMaster = parse(masterBytes.toString('utf8'), master);
  if (!parsedMaster.isMasterPlaylist)
    throw new OcdnError(ErrorCodes.BAD_PLAYLIST, `${master} is a media playlist, not a master playlist (import needs the master: name it with --master)`);
  const walk = new PackageWalk();
  walk.objects.set(master, 'playlist');

  const variantPaths: Array<{ variant: HLS.types.Variant; path: string }> = [];
  const alternates = new Set<string>();
  for (const v of parsedMaster.variants) {
    const path = walk.ref(v.uri, master, 'playlist', v.isIFrameOnly ? 'I-frame variant' : 'variant');
    if (!v.isIFrameOnly && !(Number(v.bandwidth) > 0)) walk.problems.push(`${master}: variant "${v.uri}" has no valid BANDWIDTH`);
    if (path && !v.isIFrameOnly) variantPaths.push({ variant: v, path });
    else if (path) alternates.add(path);
    for (const r of [...v.audio, ...v.video, ...v.subtitles]) {
      if (r.uri === undefined) continue;
      const rp = walk.ref(r.uri, master, 'playlist', `EXT-X-MEDIA ${r.type} "${r.name}"`);
      if (rp) alternates.add(rp);
    }
  }
  for (const k of parsedMaster.sessionKeyList ?? []) if (k.method !== 'NONE' && k.uri !== undefined) walk.ref(k.uri, master, 'media', 'EXT-X-SESSION-KEY');
  if (parsedMaster.variants.filter((v) => !v.isIFrameOnly).length === 0) walk.problems.push(`${master}: no variants`);
  // Names the import writes itself must not be objects of the package.
  const reserved = new Set(['hashes.json', ...(master === DEFAULT_MASTER ? [] : [DEFAULT_MASTER])]);
  for (const p of walk.objects.keys()) if (reserved.has(p)) walk.problems.push(`${master}: the package references ${p}, a name the import writes`);
  for (const p of walk.objects.keys()) {
    if (`/vod/${id}/${p}`.length > MAX_PATH_LENGTH) walk.problems.push(`${p}: path longer than edges serve (${MAX_PATH_LENGTH} characters with /vod/${id}/)`);
  }

  const playlists = [...new Set([...variantPaths.map((v) => v.path), ...alternates])];
  if (playlists.length > IMPORT_LIMITS.maxPlaylists)
    throw new OcdnError(ErrorCodes.BAD_REQUEST, `the master lists ${playlists.length} playlists, over ${IMPORT_LIMITS.maxPlaylists}`);
  const facts = new Map<string, MediaFacts>();
  for (const path of playlists) {
    if ((await src.size(path)) === undefined) continue; // reported below with every other missing object
    const p = parse((await src.read(path, IMPORT_LIMITS.maxPlaylistBytes)).toString('utf8'), path);
    if (p.isMasterPlaylist) {
      walk.problems.push(`${path}: a master playlist where a media playlist was expected`);
      continue;
    }
    facts.set(path, walk.media(p, path));
  }
  walk.fail(id);

  // Every object there, every byte range inside its file.
  const sizes = new Map<string, number>();
  const missing: string[] = [];
  await forEachBounded(
    walk.objects.keys(),
    concurrency,
    async (path) => {
      const size = path === master ? masterSize : await src.size(path);
      if (size === undefined) missing.push(path);
      else sizes.set(path, size);
    },
    opts.signal,
  );
  for (const path of missing.sort()) walk.problems.push(`${path}: missing from ${src.where}`);
  for (const r of walk.ranges) {
    const target = r.where.slice(r.where.lastIndexOf('→ ') + 2);
    const size = sizes.get(target);
    if (size !== undefined && r.offset + r.length > size)
      walk.problems.push(`${r.where}: byte range ${r.length}@${r.offset} past the end of the ${size}-byte file`);
  }
  walk.fail(id);

  // ---- the catalog entry --------------------------------------------------------------
  const rendBytes = (f: MediaFacts) => {
    const seen = new Set<string>();
    let total = 0;
    for (const part of [...f.parts, ...f.inits]) {
      const k = part.range ? `${part.path}@${part.range.offset}` : part.path;
      if (seen.has(k)) continue;
      seen.add(k);
      total += part.range ? part.range.length : (sizes.get(part.path) ?? 0);
    }
    return total;
  };
  const taken = new Set<string>();
  const renditions: CatalogRendition[] = [];
  const seenVariant = new Set<string>();
  for (const { variant: v, path } of variantPaths) {
    if (seenVariant.has(path)) continue;
    seenVariant.add(path);
    const f = facts.get(path)!;
    const avg = Number(v.averageBandwidth);
    renditions.push({
      name: renditionName(path, taken),
      bandwidth: Number(v.bandwidth),
      averageBandwidth: avg > 0 ? avg : Math.ceil((rendBytes(f) * 8) / Math.max(0.001, f.durationSec)),
      width: v.resolution?.width ?? 0,
      height: v.resolution?.height ?? 0,
      codecs: v.codecs ?? '',
      uri: path,
    });
  }
  const variantFacts = renditions.map((r) => facts.get(r.uri!)!);
  const allFacts = [...facts.values()];
  const importedAt = new Date().toISOString();
  const entry: Omit<CatalogTitle, 'popularityRank' | 'manifest'> = {
    id,
    durationSec: Math.round(Math.max(...variantFacts.map((f) => f.durationSec)) * 1000) / 1000,
    segmentSec: Math.max(...allFacts.map((f) => f.targetSec)),
    segments: Math.max(...variantFacts.map((f) => f.segments)),
    renditions,
    mode: 'import',
    container: variantFacts[0]!.fmp4 ? 'fmp4' : 'ts',
    layout: allFacts.some((f) => f.byterange) ? 'byterange' : 'segments',
    importedAt,
  };

  // ---- hash, upload (or fix metadata in place), manifest ---------------------------------
  const counts = { uploaded: 0, skipped: 0, bytes: 0, done: 0 };
  const paths = [...walk.objects.keys()].sort();
  const total = paths.length + (master === DEFAULT_MASTER ? 0 : 1) + 2;
  const progress = (key: string) => {
    counts.done++;
    opts.onProgress?.({ total, done: counts.done, uploaded: counts.uploaded, skipped: counts.skipped, bytes: counts.bytes, key });
  };
  const hashes = new Map<string, { size: number; sha256: string }>();
  const keyOf = (path: string) => `vod/${id}/${path}`;
  const cacheOf = (path: string) => (walk.objects.get(path) === 'playlist' || path.endsWith('.m3u8') ? PLAYLIST_CACHE : MEDIA_CACHE);
  const putOpts = { signal: opts.signal };

  if (opts.fromDir !== undefined) {
    await forEachBounded(
      paths,
      concurrency,
      async (path) => {
        // One object in memory per lane, as seed does; a file changed since the size check is caught by the size below.
        const body = path === master ? masterBytes : await src.read(path, Number.MAX_SAFE_INTEGER);
        if (body.length !== sizes.get(path))
          throw new OcdnError(ErrorCodes.BAD_REQUEST, `${path} changed while importing (${sizes.get(path)} → ${body.length} bytes)`);
        hashes.set(path, { size: body.length, sha256: sha256Hex(body) });
        const wrote = await putObjectIfChanged(
          opts.client,
          opts.bucket,
          { key: keyOf(path), body, contentType: contentTypeFor(path), cacheControl: cacheOf(path) },
          putOpts,
        );
        if (wrote) {
          counts.uploaded++;
          counts.bytes += body.length;
        } else counts.skipped++;
        progress(keyOf(path));
      },
      opts.signal,
    );
  } else {
    await forEachBounded(
      paths,
      concurrency,
      async (path) => {
        const key = keyOf(path);
        const head = await opts.client.send(new HeadObjectCommand({ Bucket: opts.bucket, Key: key }));
        const actual = await hashStream(await src.stream(path));
        hashes.set(path, actual);
        const declared = head.Metadata?.[SHA256_META]?.toLowerCase();
        if (declared !== undefined && declared !== actual.sha256)
          throw new OcdnError(
            ErrorCodes.BAD_REQUEST,
            `${key}: its metadata declares SHA-256 ${declared.slice(0, 12)}…, its bytes hash to ${actual.sha256.slice(0, 12)}… (corrupt or changed behind the packager: re-upload it)`,
          );
        if (declared === undefined) {
          // Edges verify fills against this metadata: add it, keeping the object's type and caching.
          await opts.client.send(
            new CopyObjectCommand({
              Bucket: opts.bucket,
              Key: key,
              CopySource: `${opts.bucket}/${key.split('/').map(encodeURIComponent).join('/')}`,
              MetadataDirective: 'REPLACE',
              Metadata: { ...head.Metadata, [SHA256_META]: actual.sha256 },
              ContentType: head.ContentType ?? contentTypeFor(path),
              CacheControl: head.CacheControl ?? cacheOf(path),
            }),
            { abortSignal: opts.signal },
          );
          counts.uploaded++;
        } else counts.skipped++;
        progress(key);
      },
      opts.signal,
    );
  }

  // Steering and edges look for vod/{title}/master.m3u8: a master under another name is copied there (same folder, so its URIs resolve the same).
  if (master !== DEFAULT_MASTER) {
    const wrote = await putObjectIfChanged(
      opts.client,
      opts.bucket,
      { key: contentKeys.master(id), body: masterBytes, contentType: contentTypeFor(DEFAULT_MASTER), cacheControl: PLAYLIST_CACHE },
      putOpts,
    );
    hashes.set(DEFAULT_MASTER, { size: masterBytes.length, sha256: sha256Hex(masterBytes) });
    if (wrote) {
      counts.uploaded++;
      counts.bytes += masterBytes.length;
    } else counts.skipped++;
    progress(contentKeys.master(id));
  }

  const manifest: HashManifest = {
    version: 1,
    title: id,
    objects: [...hashes.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([path, h]) => ({ path, size: h.size, sha256: h.sha256 })),
  };
  const manifestBody = Buffer.from(`${JSON.stringify(manifest)}\n`);
  const manifestKey = contentKeys.hashes(id);
  if (
    await putObjectIfChanged(
      opts.client,
      opts.bucket,
      { key: manifestKey, body: manifestBody, contentType: 'application/json', cacheControl: PLAYLIST_CACHE },
      putOpts,
    )
  ) {
    counts.uploaded++;
    counts.bytes += manifestBody.length;
  } else counts.skipped++;
  progress(manifestKey);
  const totalBytes = manifest.objects.reduce((a, o) => a + o.size, 0);

  // ---- catalog.json, last -----------------------------------------------------------------
  const manifestRef = { key: manifestKey, sha256: sha256Hex(manifestBody), objects: manifest.objects.length, bytes: totalBytes };
  let registered: CatalogTitle | undefined;
  const update = await updateCatalog(
    opts.client,
    opts.bucket,
    (existing) => {
      const others = existing?.titles.filter((t) => t.id !== id) ?? [];
      const prev = existing?.titles.find((t) => t.id === id);
      const rank = opts.rank ?? (prev?.mode === 'import' ? prev.popularityRank : undefined) ?? Math.max(0, ...others.map((t) => t.popularityRank)) + 1;
      const title: CatalogTitle = { ...entry, popularityRank: rank, manifest: manifestRef };
      // An unchanged re-import keeps its importedAt, so catalog.json stays byte-for-byte the same.
      if (prev && sameEntry(prev, title)) {
        registered = prev;
        return undefined;
      }
      registered = title;
      return buildCatalog(existing?.ladder ?? 'import', [...others, title]);
    },
    { signal: opts.signal },
  );
  progress('catalog.json');
  const catalogBytes = Buffer.byteLength(serializeCatalog(update.catalog));
  if (update.writes > 0) {
    counts.uploaded++;
    counts.bytes += update.bytes;
  } else counts.skipped++;
  return {
    title: registered!,
    catalog: update.catalog,
    objects: manifest.objects.length + 1,
    uploaded: counts.uploaded,
    skipped: counts.skipped,
    bytes: counts.bytes,
    totalBytes: totalBytes + manifestBody.length + catalogBytes,
    catalogWritten: update.writes > 0,
    elapsedMs: Date.now() - started,
  };
}

/** Re-checks an imported title: hashes.json against the catalog's pin, then every object against hashes.json. Returns the problems (empty: intact). */
export async function verifyImportedTitle(client: S3Client, bucket: string, title: CatalogTitle, concurrency = 8): Promise<string[]> {
  if (!title.manifest) return [`${title.id}: no hash manifest in the catalog (not an imported title)`];
  const problems: string[] = [];
  const out = await client.send(new GetObjectCommand({ Bucket: bucket, Key: title.manifest.key }));
  const body = Buffer.from(await out.Body!.transformToByteArray());
  if (sha256Hex(body) !== title.manifest.sha256) return [`${title.manifest.key}: does not hash to the catalog's ${title.manifest.sha256.slice(0, 12)}…`];
  const manifest = JSON.parse(body.toString('utf8')) as HashManifest;
  await forEachBounded(manifest.objects, concurrency, async (o) => {
    const key = `vod/${title.id}/${o.path}`;
    try {
      const got = await hashStream((await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }))).Body as Readable);
      if (got.sha256 !== o.sha256 || got.size !== o.size)
        problems.push(`${key}: ${got.size} bytes hashing to ${got.sha256.slice(0, 12)}…, registered ${o.size} bytes ${o.sha256.slice(0, 12)}…`);
    } catch (err) {
      if (isMissing(err as SdkError)) problems.push(`${key}: missing`);
      else throw err;
    }
  });
  return problems.sort();
}

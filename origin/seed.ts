import { CreateBucketCommand, GetObjectCommand, HeadBucketCommand, HeadObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { CATALOG_KEY, contentKeys, type Catalog, type CatalogTitle } from '../common/contracts.ts';
import { ErrorCodes, OcdnError } from '../common/errors.ts';
import { buildCatalog, parseCatalog, sameCatalogContent, serializeCatalog, syntheticTitle, titleId } from './catalog.ts';
import { updateCatalog } from './catalog-store.ts';
import { getLadder, type LadderRung } from './ladder.ts';
import { buildMasterPlaylist, buildMediaPlaylist, PLAYLIST_CONTENT_TYPE, segmentFileName } from './playlists.ts';
import { PLAYLIST_CMSD_STATIC, segmentCmsdStatic, CMSD_STATIC_META } from './cmsd-static.ts';
import { SHA256_META } from './reader.ts';
import { segmentDurations, sha256Hex, syntheticSegment, type SyntheticRendition } from './synthetic.ts';

export const SEGMENT_CONTENT_TYPE = 'video/mp2t';
/** Same default as the AWS CLI: below it one PUT is cheaper than a multipart round trip. */
export const DEFAULT_MULTIPART_THRESHOLD = 8 * 1024 * 1024;
/** S3's minimum part size. */
export const DEFAULT_PART_SIZE = 5 * 1024 * 1024;

const CACHE_CONTROL = {
  segment: 'public, max-age=31536000, immutable',
  playlist: 'public, max-age=300',
} as const;

export interface SeedProgress {
  /** Objects this run will write or check, catalog.json included. */
  total: number;
  done: number;
  uploaded: number;
  skipped: number;
  /** Bytes uploaded (skipped objects not counted). */
  bytes: number;
  /** The object just finished. */
  key: string;
  phase: 'encode' | 'upload';
}

export interface SeedOptions {
  client: S3Client;
  bucket: string;
  /** For messages only (which endpoint failed). */
  endpoint?: string;
  titles: number;
  durationSec: number;
  segmentSec: number;
  /** Preset name ("apple", "small") or explicit rungs. */
  ladder: string | readonly LadderRung[];
  mode?: 'synthetic' | 'ffmpeg';
  /** Objects in flight at once. */
  concurrency?: number;
  /** Number of the first title (title-0001 = 1); lets several seeds fill one bucket. */
  firstTitle?: number;
  multipartThresholdBytes?: number;
  partSizeBytes?: number;
  /** Bound on the reachability check before any upload. */
  checkTimeoutMs?: number;
  /** ffmpeg mode: binary and scratch folder for encodes. */
  ffmpegPath?: string;
  workDir?: string;
  onProgress?: (p: SeedProgress) => void;
  signal?: AbortSignal;
}

export interface SeedResult {
  uploaded: number;
  skipped: number;
  /** Bytes uploaded this run. */
  bytes: number;
  /** Bytes of everything seeded (uploaded or already there). */
  totalBytes: number;
  objects: number;
  catalog: Catalog;
  elapsedMs: number;
}

/** An object to write: bytes made on demand so only `concurrency` bodies live at once. */
export interface SeedObject {
  key: string;
  contentType: string;
  cacheControl?: string;
  /** CMSD-Static value stored as metadata (origin/cmsd-static.ts), passed through by edges. */
  cmsdStatic?: string;
  body: () => Buffer | Promise<Buffer>;
}

type SdkError = Error & { $metadata?: { httpStatusCode?: number }; code?: string; errors?: Array<{ code?: string }> };

function networkCode(err: SdkError): string | undefined {
  return err.code ?? (err.cause as { code?: string } | undefined)?.code ?? err.errors?.find((e) => e.code)?.code;
}

/**
 * Fails fast and clearly when S3 is not there: one HeadBucket bounded by `timeoutMs`, no SDK
 * retry loop, and the endpoint named in the message. Creates the bucket when it is missing.
 */
export async function ensureBucket(
  client: S3Client,
  bucket: string,
  opts: { endpoint?: string; timeoutMs?: number; create?: boolean } = {},
): Promise<'exists' | 'created'> {
  const where = opts.endpoint ?? 'the S3 endpoint';
  const timeoutMs = opts.timeoutMs ?? 5_000;
  const call = async <T>(what: string, run: (signal: AbortSignal) => Promise<T>, passThrough: (err: SdkError) => boolean): Promise<T> => {
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), timeoutMs);
    try {
      return await run(ac.signal);
    } catch (raw) {
      const err = raw as SdkError;
      const status = err.$metadata?.httpStatusCode;
      if (ac.signal.aborted)
        throw new OcdnError(ErrorCodes.S3_UNREACHABLE, `S3 endpoint ${where} did not answer ${what} within ${timeoutMs} ms`, { cause: err });
      if (status === 403)
        throw new OcdnError(
          ErrorCodes.FORBIDDEN,
          `S3 endpoint ${where} refused access to bucket "${bucket}" (403): check --access-key-id/--secret-access-key`,
          { cause: err },
        );
      if (passThrough(err)) throw err;
      const code = networkCode(err);
      if (!code && status) {
        throw new OcdnError(
          ErrorCodes.S3_UNREACHABLE,
          `S3 endpoint ${where} answered ${what} for bucket "${bucket}" with HTTP ${status} (${err.name}): is it an S3 server, and the right one?`,
          { cause: err },
        );
      }
      const why = code ?? (status ? `HTTP ${status}` : err.message || err.name);
      throw new OcdnError(ErrorCodes.S3_UNREACHABLE, `cannot reach S3 endpoint ${where}: ${why}`, { cause: err });
    } finally {
      clearTimeout(timer);
    }
  };
  try {
    await call(
      'HeadBucket',
      (signal) => client.send(new HeadBucketCommand({ Bucket: bucket }), { abortSignal: signal }),
      (e) => e.$metadata?.httpStatusCode === 404 || e.name === 'NotFound' || e.name === 'NoSuchBucket',
    );
    return 'exists';
  } catch (err) {
    if (err instanceof OcdnError) throw err;
  }
  if (opts.create === false) throw new OcdnError(ErrorCodes.NOT_FOUND, `bucket "${bucket}" does not exist at ${where} (seed it with \`ocdn content seed\`)`);
  try {
    // Another seeder may have created it between our two calls: that is success.
    await call(
      'CreateBucket',
      (signal) => client.send(new CreateBucketCommand({ Bucket: bucket }), { abortSignal: signal }),
      (e) => e.name === 'BucketAlreadyOwnedByYou',
    );
  } catch (err) {
    if ((err as SdkError).name !== 'BucketAlreadyOwnedByYou') throw err;
  }
  return 'created';
}

/** sha256 metadata of an object, or undefined when it does not exist. */
async function headSha(
  client: S3Client,
  bucket: string,
  key: string,
): Promise<{ sha256: string | undefined; size: number | undefined; cmsdStatic: string | undefined } | undefined> {
  try {
    const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    return { sha256: head.Metadata?.[SHA256_META], size: head.ContentLength, cmsdStatic: head.Metadata?.[CMSD_STATIC_META] };
  } catch (err) {
    const e = err as SdkError;
    if (e.$metadata?.httpStatusCode === 404 || e.name === 'NotFound' || e.name === 'NoSuchKey') return undefined;
    throw err;
  }
}

/**
 * Writes one object with its SHA-256 in metadata; multipart above the threshold. Returns
 * false when the bucket already holds the same bytes (by size and sha256), true when written.
 */
export async function putObjectIfChanged(
  client: S3Client,
  bucket: string,
  obj: { key: string; body: Buffer; contentType: string; cacheControl?: string; cmsdStatic?: string },
  opts: { multipartThresholdBytes?: number; partSizeBytes?: number; signal?: AbortSignal } = {},
): Promise<boolean> {
  const sha = sha256Hex(obj.body);
  const existing = await headSha(client, bucket, obj.key);
  // Same bytes but other CMSD-Static (a bucket seeded before it existed): rewritten, so edges see it.
  if (existing && existing.sha256 === sha && existing.size === obj.body.length && existing.cmsdStatic === obj.cmsdStatic) return false;
  const params = {
    Bucket: bucket,
    Key: obj.key,
    Body: obj.body,
    ContentType: obj.contentType,
    CacheControl: obj.cacheControl,
    Metadata: { [SHA256_META]: sha, ...(obj.cmsdStatic === undefined ? {} : { [CMSD_STATIC_META]: obj.cmsdStatic }) },
  };
  if (obj.body.length >= (opts.multipartThresholdBytes ?? DEFAULT_MULTIPART_THRESHOLD)) {
    const abortController = new AbortController();
    opts.signal?.addEventListener('abort', () => abortController.abort(), { once: true });
    // Loaded on the first multipart upload: most commands that import seeding never make one.
    const { Upload } = await import('@aws-sdk/lib-storage');
    await new Upload({ client, params, partSize: Math.max(DEFAULT_PART_SIZE, opts.partSizeBytes ?? DEFAULT_PART_SIZE), queueSize: 2, abortController }).done();
  } else {
    await client.send(new PutObjectCommand({ ...params, ContentLength: obj.body.length }), { abortSignal: opts.signal });
  }
  return true;
}

/** Runs `worker` over `items` with at most `concurrency` in flight; the first failure stops the rest. */
export async function forEachBounded<T>(items: Iterable<T>, concurrency: number, worker: (item: T) => Promise<void>, signal?: AbortSignal): Promise<void> {
  const it = items[Symbol.iterator]();
  let failed: unknown;
  const lane = async () => {
    for (;;) {
      if (failed !== undefined || signal?.aborted) return;
      const next = it.next();
      if (next.done) return;
      try {
        await worker(next.value);
      } catch (err) {
        failed ??= err;
        return;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, concurrency) }, lane));
  if (failed !== undefined) throw failed;
  if (signal?.aborted) throw new OcdnError(ErrorCodes.INTERNAL, 'seed aborted');
}

/** Every object of a synthetic title, playlists first, in key order. */
export function* syntheticObjects(title: CatalogTitle, ladder: readonly LadderRung[]): Generator<SeedObject> {
  yield {
    key: contentKeys.master(title.id),
    contentType: PLAYLIST_CONTENT_TYPE,
    cacheControl: CACHE_CONTROL.playlist,
    cmsdStatic: PLAYLIST_CMSD_STATIC,
    body: () => Buffer.from(buildMasterPlaylist(title.renditions.map((r, i) => ({ ...r, frameRate: ladder[i]?.frameRate })))),
  };
  const durations = segmentDurations(title.durationSec, title.segmentSec);
  for (const rung of ladder) {
    yield {
      key: contentKeys.media(title.id, rung.name),
      contentType: PLAYLIST_CONTENT_TYPE,
      cacheControl: CACHE_CONTROL.playlist,
      cmsdStatic: PLAYLIST_CMSD_STATIC,
      body: () => Buffer.from(buildMediaPlaylist(durations)),
    };
    const spec: SyntheticRendition = {
      title: title.id,
      rendition: rung.name,
      bitrate: rung.bitrate,
      durationSec: title.durationSec,
      segmentSec: title.segmentSec,
    };
    for (let i = 0; i < durations.length; i++) {
      yield {
        key: contentKeys.segment(title.id, rung.name, i),
        contentType: SEGMENT_CONTENT_TYPE,
        cacheControl: CACHE_CONTROL.segment,
        cmsdStatic: segmentCmsdStatic(rung.bitrate, durations[i]!, i + 1 < durations.length ? segmentFileName(i + 1) : undefined),
        body: () => syntheticSegment(spec, i),
      };
    }
  }
}

/**
 * Packages `titles` titles into HLS and writes them to the bucket, then catalog.json (last, so
 * a reader never sees a catalog entry whose objects are still missing). Safe to re-run: objects
 * already present with the same SHA-256 are skipped, so a second run uploads nothing. Never
 * deletes: titles of earlier runs stay, in the bucket and in the catalog.
 */
export async function seedContent(opts: SeedOptions): Promise<SeedResult> {
  const started = Date.now();
  const ladder = typeof opts.ladder === 'string' ? getLadder(opts.ladder) : [...opts.ladder];
  const ladderName = typeof opts.ladder === 'string' ? opts.ladder : 'custom';
  const concurrency = opts.concurrency ?? 8;
  const first = opts.firstTitle ?? 1;
  if (!Number.isInteger(opts.titles) || opts.titles < 1) throw new OcdnError(ErrorCodes.CONFIG, `titles must be a whole number ≥ 1 (got ${opts.titles})`);
  segmentDurations(opts.durationSec, opts.segmentSec); // validates both

  // Missing ffmpeg is found before S3 is touched: the user fixes one thing at a time, cheapest first.
  const ffmpeg = opts.mode === 'ffmpeg' ? await (await import('./ffmpeg.ts')).findFfmpeg(opts.ffmpegPath) : undefined;
  await ensureBucket(opts.client, opts.bucket, { endpoint: opts.endpoint, timeoutMs: opts.checkTimeoutMs });

  const counts = { uploaded: 0, skipped: 0, bytes: 0, totalBytes: 0, done: 0 };
  const segmentsPerRendition = segmentDurations(opts.durationSec, opts.segmentSec).length;
  let total = opts.titles * (1 + ladder.length * (1 + segmentsPerRendition)) + 1;
  const putOpts = { multipartThresholdBytes: opts.multipartThresholdBytes, partSizeBytes: opts.partSizeBytes, signal: opts.signal };

  const write = async (obj: SeedObject): Promise<void> => {
    const body = await obj.body();
    const wrote = await putObjectIfChanged(
      opts.client,
      opts.bucket,
      { key: obj.key, body, contentType: obj.contentType, cacheControl: obj.cacheControl, cmsdStatic: obj.cmsdStatic },
      putOpts,
    );
    counts.totalBytes += body.length;
    if (wrote) {
      counts.uploaded++;
      counts.bytes += body.length;
    } else counts.skipped++;
    counts.done++;
    opts.onProgress?.({ total, done: counts.done, uploaded: counts.uploaded, skipped: counts.skipped, bytes: counts.bytes, key: obj.key, phase: 'upload' });
  };

  const titles: CatalogTitle[] = [];
  if (ffmpeg === undefined) {
    for (let n = first; n < first + opts.titles; n++) {
      titles.push(syntheticTitle({ id: titleId(n), rank: n, durationSec: opts.durationSec, segmentSec: opts.segmentSec, ladder }));
    }
    const all = function* () {
      for (const t of titles) yield* syntheticObjects(t, ladder);
    };
    await forEachBounded(all(), concurrency, write, opts.signal);
  } else {
    const { encodeTitle } = await import('./ffmpeg.ts');
    for (let n = first; n < first + opts.titles; n++) {
      const id = titleId(n);
      opts.onProgress?.({
        total,
        done: counts.done,
        uploaded: counts.uploaded,
        skipped: counts.skipped,
        bytes: counts.bytes,
        key: `vod/${id}/`,
        phase: 'encode',
      });
      const encoded = await encodeTitle({
        ffmpeg,
        id,
        rank: n,
        durationSec: opts.durationSec,
        segmentSec: opts.segmentSec,
        ladder,
        workDir: opts.workDir,
        signal: opts.signal,
      });
      try {
        // ffmpeg decides the real segment count; correct the estimate.
        total += encoded.objects.length - (1 + ladder.length * (1 + segmentsPerRendition));
        titles.push(encoded.title);
        await forEachBounded(encoded.objects, concurrency, write, opts.signal);
      } finally {
        await encoded.cleanup();
      }
    }
  }

  // Seeding only adds: titles from earlier runs stay in the bucket, so they stay in the catalog
  // (a title seeded again replaces its old entry). An unreadable catalog is simply rewritten.
  // catalog.json carries generatedAt, so compare content, not bytes, to keep re-runs no-ops.
  // updateCatalog re-applies this on a catalog an import or another seed wrote meanwhile.
  const seededNow = new Set(titles.map((t) => t.id));
  const update = await updateCatalog(
    opts.client,
    opts.bucket,
    (existing) => {
      const next = buildCatalog(ladderName, [...(existing?.titles.filter((t) => !seededNow.has(t.id)) ?? []), ...titles]);
      return existing && sameCatalogContent(existing, next) ? undefined : next;
    },
    { signal: opts.signal },
  );
  const catalog = update.catalog;
  if (update.writes > 0) {
    counts.uploaded++;
    counts.bytes += update.bytes;
  } else counts.skipped++;
  counts.done++;
  counts.totalBytes += Buffer.byteLength(serializeCatalog(catalog));
  opts.onProgress?.({ total, done: counts.done, uploaded: counts.uploaded, skipped: counts.skipped, bytes: counts.bytes, key: CATALOG_KEY, phase: 'upload' });
  return {
    uploaded: counts.uploaded,
    skipped: counts.skipped,
    bytes: counts.bytes,
    totalBytes: counts.totalBytes,
    objects: counts.done,
    catalog,
    elapsedMs: Date.now() - started,
  };
}

/** catalog.json from the bucket, or undefined when there is none. */
export async function readCatalog(client: S3Client, bucket: string): Promise<Catalog | undefined> {
  try {
    const out = await client.send(new GetObjectCommand({ Bucket: bucket, Key: CATALOG_KEY }));
    return parseCatalog(await out.Body!.transformToString('utf8'));
  } catch (err) {
    const e = err as SdkError;
    if (e.$metadata?.httpStatusCode === 404 || e.name === 'NoSuchKey') return undefined;
    throw err;
  }
}

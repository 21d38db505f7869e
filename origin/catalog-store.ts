import { GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { CATALOG_KEY, type Catalog } from '../common/contracts.ts';
import { ErrorCodes, OcdnError } from '../common/errors.ts';
import { CATALOG_CONTENT_TYPE, parseCatalog, serializeCatalog } from './catalog.ts';
import { SHA256_META } from './reader.ts';
import { sha256Hex } from './synthetic.ts';

/**
 * catalog.json is written by several commands (seed, import) that may run at once, each as a
 * read-modify-write. Two guards keep one writer from erasing another's titles:
 *
 * 1. Conditional PUT: `If-Match: <ETag read>` (or `If-None-Match: *` when there was no
 *    catalog). AWS S3 and MinIO answer 412 when someone wrote in between; we re-read and
 *    re-apply. s3rver (the embedded origin) ignores both headers, so on it this guard is void.
 * 2. Read-back: after each write the catalog is read again and the change re-applied; the loop
 *    ends only on a read that already contains the change. A writer that overwrote us before
 *    that read is caught; one that overwrites us after it (it read before our write, writes
 *    after our read-back) is not: only guard 1 closes that window.
 */

export interface CatalogUpdate {
  catalog: Catalog;
  /** Writes made (0: the catalog already had the change). */
  writes: number;
  /** Bytes of the last catalog written (0 when none). */
  bytes: number;
}

/**
 * `change` gets the current catalog (undefined: none, or unreadable) and returns the catalog
 * to write, or undefined when the current one already holds the change. It may be called
 * several times and must be a pure function of its argument.
 */
export type CatalogChange = (current: Catalog | undefined) => Catalog | undefined;

type SdkError = Error & { $metadata?: { httpStatusCode?: number } };

const isMissing = (e: SdkError) => e.$metadata?.httpStatusCode === 404 || e.name === 'NoSuchKey' || e.name === 'NotFound';
const isConflict = (e: SdkError) =>
  e.$metadata?.httpStatusCode === 412 || e.$metadata?.httpStatusCode === 409 || e.name === 'PreconditionFailed' || e.name === 'ConditionalRequestConflict';

/** catalog.json and its ETag; `catalog` undefined when there is none or it does not parse (it is then replaced). */
export async function readCatalogVersion(client: S3Client, bucket: string): Promise<{ catalog: Catalog | undefined; etag: string | undefined }> {
  try {
    const out = await client.send(new GetObjectCommand({ Bucket: bucket, Key: CATALOG_KEY }));
    const text = await out.Body!.transformToString('utf8');
    let catalog: Catalog | undefined;
    try {
      catalog = parseCatalog(text);
    } catch {
      catalog = undefined;
    }
    return { catalog, etag: out.ETag };
  } catch (err) {
    if (isMissing(err as SdkError)) return { catalog: undefined, etag: undefined };
    throw err;
  }
}

export async function updateCatalog(
  client: S3Client,
  bucket: string,
  change: CatalogChange,
  opts: { attempts?: number; signal?: AbortSignal } = {},
): Promise<CatalogUpdate> {
  const attempts = opts.attempts ?? 8;
  let writes = 0;
  let bytes = 0;
  for (let attempt = 0; ; attempt++) {
    const { catalog: current, etag } = await readCatalogVersion(client, bucket);
    const next = change(current);
    if (next === undefined) {
      if (!current) throw new OcdnError(ErrorCodes.INTERNAL, 'catalog change returned nothing for an empty bucket');
      return { catalog: current, writes, bytes };
    }
    if (attempt >= attempts)
      throw new OcdnError(ErrorCodes.INTERNAL, `catalog.json kept changing under us: gave up after ${attempts} writes (another seed or import running?)`);
    const body = Buffer.from(serializeCatalog(next));
    try {
      await client.send(
        new PutObjectCommand({
          Bucket: bucket,
          Key: CATALOG_KEY,
          Body: body,
          ContentLength: body.length,
          ContentType: CATALOG_CONTENT_TYPE,
          CacheControl: 'no-cache',
          Metadata: { [SHA256_META]: sha256Hex(body) },
          ...(etag ? { IfMatch: etag } : { IfNoneMatch: '*' }),
        }),
        { abortSignal: opts.signal },
      );
      writes++;
      bytes = body.length;
    } catch (err) {
      if (!isConflict(err as SdkError)) throw err;
    }
    // Back off a little (with jitter) so two writers that collided do not collide again in step.
    if (attempt > 0) await new Promise((r) => setTimeout(r, Math.random() * 50 * attempt));
  }
}

import type { Readable } from 'node:stream';
import { GetObjectCommand, HeadBucketCommand, type S3Client } from '@aws-sdk/client-s3';
import { ErrorCodes, OcdnError } from '../common/errors.ts';
import { retry } from '../common/retry.ts';
import { CMSD_STATIC_META } from './cmsd-static.ts';

export const SHA256_META = 'sha256';

export interface ByteRange {
  start: number;
  /** inclusive; undefined = to the end */
  end?: number;
}

export interface OriginObject {
  key: string;
  body: Buffer;
  /** Size of the whole object (not of the range). */
  size: number;
  contentType: string | undefined;
  /** SHA-256 hex of the whole object, from metadata; S3's own ETag when the writer left none. */
  sha256: string | undefined;
  /** CMSD-Static value the packager stored (origin/cmsd-static.ts), as is. */
  cmsdStatic: string | undefined;
  etag: string | undefined;
  lastModified: Date | undefined;
  range: { start: number; end: number } | undefined;
}

/** An object whose body is still on its way: the reader's retries and timeout cover the response head only. */
export interface OriginStream {
  key: string;
  body: Readable;
  /** Content-Length of the body, when S3 gave it. */
  size: number | undefined;
  contentType: string | undefined;
  sha256: string | undefined;
  cmsdStatic: string | undefined;
}

export interface OriginReaderOptions {
  client: S3Client;
  bucket: string;
  /** Per attempt. */
  timeoutMs?: number;
  /** Further attempts after the first, on retriable errors only. */
  retries?: number;
  baseBackoffMs?: number;
  maxBackoffMs?: number;
}

const RETRIABLE_NAMES = new Set([
  'TimeoutError',
  'RequestTimeout',
  'RequestTimeoutException',
  'SlowDown',
  'Throttling',
  'ThrottlingException',
  'InternalError',
  'ServiceUnavailable',
]);
const RETRIABLE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'UND_ERR_SOCKET']);

type SdkError = Error & { $metadata?: { httpStatusCode?: number }; code?: string; Code?: string };

function statusOf(err: SdkError): number | undefined {
  return err.$metadata?.httpStatusCode;
}

/**
 * Reads objects from the S3 origin for edges and players. Every failure comes out as an
 * OcdnError with one of three codes, so callers decide on code alone: NOT_FOUND (do not retry,
 * negative-cache), ORIGIN_TIMEOUT (504) and ORIGIN_UNAVAILABLE (502).
 */
export class OriginReader {
  readonly bucket: string;
  private readonly client: S3Client;
  private readonly timeoutMs: number;
  private readonly retries: number;
  private readonly baseBackoffMs: number;
  private readonly maxBackoffMs: number;

  constructor(opts: OriginReaderOptions) {
    this.client = opts.client;
    this.bucket = opts.bucket;
    this.timeoutMs = opts.timeoutMs ?? 5_000;
    this.retries = opts.retries ?? 2;
    this.baseBackoffMs = opts.baseBackoffMs ?? 50;
    this.maxBackoffMs = opts.maxBackoffMs ?? 1_000;
  }

  async getObject(key: string, range?: ByteRange): Promise<OriginObject> {
    return this.withRetries(key, async (signal) => {
      const out = await this.client.send(
        new GetObjectCommand({
          Bucket: this.bucket,
          Key: key,
          Range: range ? `bytes=${range.start}-${range.end ?? ''}` : undefined,
        }),
        { abortSignal: signal },
      );
      const body = out.Body ? Buffer.from(await out.Body.transformToByteArray()) : Buffer.alloc(0);
      let size = body.length;
      let parsedRange: OriginObject['range'];
      const cr = out.ContentRange ? /bytes (\d+)-(\d+)\/(\d+)/.exec(out.ContentRange) : null;
      if (cr) {
        parsedRange = { start: Number(cr[1]), end: Number(cr[2]) };
        size = Number(cr[3]);
      }
      return {
        key,
        body,
        size,
        contentType: out.ContentType,
        sha256: out.Metadata?.[SHA256_META],
        cmsdStatic: out.Metadata?.[CMSD_STATIC_META],
        etag: out.ETag?.replace(/"/g, ''),
        lastModified: out.LastModified,
        range: parsedRange,
      };
    });
  }

  /**
   * The whole object as a stream, for callers that pass it on as it comes (the edge's fills).
   * A failure before the body starts is retried like getObject's; one during the body surfaces as
   * the stream's error (the client's socket timeout bounds a stalled body).
   */
  async getObjectStream(key: string): Promise<OriginStream> {
    return this.withRetries(key, async (signal) => {
      const out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }), { abortSignal: signal });
      const body = out.Body as Readable | undefined;
      if (body === undefined) throw new OcdnError(ErrorCodes.ORIGIN_UNAVAILABLE, `origin gave no body for ${key}`);
      return {
        key,
        body,
        size: out.ContentLength,
        contentType: out.ContentType,
        sha256: out.Metadata?.[SHA256_META],
        cmsdStatic: out.Metadata?.[CMSD_STATIC_META],
      };
    });
  }

  /** Cheap reachability check for readiness probes: the bucket answers. */
  async ping(): Promise<void> {
    await this.withRetries('(bucket)', (signal) => this.client.send(new HeadBucketCommand({ Bucket: this.bucket }), { abortSignal: signal }), 0);
  }

  private async withRetries<T>(key: string, attempt: (signal: AbortSignal) => Promise<T>, retries = this.retries): Promise<T> {
    // Only what can get better is tried again: not a 404, a 403 or a bad request.
    const retriable = new WeakSet<OcdnError>();
    return retry(
      async () => {
        const ac = new AbortController();
        const timer = setTimeout(() => ac.abort(new Error('origin timeout')), this.timeoutMs);
        try {
          return await attempt(ac.signal);
        } catch (raw) {
          const err = this.classify(key, raw as SdkError, ac.signal.aborted);
          if (err.code !== ErrorCodes.NOT_FOUND && this.isRetriable(raw as SdkError, ac.signal.aborted)) retriable.add(err);
          throw err;
        } finally {
          clearTimeout(timer);
        }
      },
      // Full jitter spreads the retries of many edges hitting one recovering origin.
      { maxAttempts: retries + 1, baseMs: this.baseBackoffMs, maxMs: this.maxBackoffMs, retryable: (err) => retriable.has(err as OcdnError) },
    );
  }

  private isRetriable(err: SdkError, timedOut: boolean): boolean {
    if (timedOut) return true;
    const status = statusOf(err);
    if (status !== undefined) return status >= 500 || status === 429;
    const code = err.code ?? (err.cause as { code?: string } | undefined)?.code;
    return RETRIABLE_NAMES.has(err.name) || (code !== undefined && RETRIABLE_CODES.has(code)) || err.name === 'AbortError';
  }

  private classify(key: string, err: SdkError, timedOut: boolean): OcdnError {
    const status = statusOf(err);
    if (status === 404 || err.name === 'NoSuchKey' || err.name === 'NotFound' || err.name === 'NoSuchBucket') {
      return new OcdnError(ErrorCodes.NOT_FOUND, `not found in origin: ${key}`, { cause: err });
    }
    if (timedOut || err.name === 'TimeoutError') {
      return new OcdnError(ErrorCodes.ORIGIN_TIMEOUT, `origin timed out after ${this.timeoutMs} ms for ${key}`, { cause: err });
    }
    const code = err.code ?? (err.cause as { code?: string } | undefined)?.code;
    const why = code ?? (status ? `HTTP ${status}` : err.name || err.message);
    return new OcdnError(ErrorCodes.ORIGIN_UNAVAILABLE, `origin unavailable for ${key}: ${why}`, { cause: err, details: { status } });
  }
}

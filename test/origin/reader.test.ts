import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEmbeddedS3, type EmbeddedS3 } from '../../origin/s3-server.ts';
import { EMBEDDED_CREDENTIALS } from '../../origin/s3-config.ts';
import { createS3Client } from '../../origin/s3-client.ts';
import { OriginReader } from '../../origin/reader.ts';
import { ErrorCodes, isOcdnError } from '../../common/errors.ts';

const BUCKET = 'ocdn-media';

describe('origin reader against the embedded S3', () => {
  let s3: EmbeddedS3;
  let dir: string;
  let client: S3Client;
  let reader: OriginReader;
  const body = Buffer.from(Array.from({ length: 100_000 }, (_, i) => i % 251));
  const sha = createHash('sha256').update(body).digest('hex');

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ocdn-reader-'));
    s3 = await startEmbeddedS3({ dir, port: 0, bucket: BUCKET });
    client = createS3Client({ s3Endpoint: s3.endpoint, s3Region: 'us-east-1', forcePathStyle: true, ...EMBEDDED_CREDENTIALS });
    reader = new OriginReader({ client, bucket: BUCKET, timeoutMs: 2_000, retries: 1, baseBackoffMs: 10 });
    await client.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'vod/t1/a.ts', Body: body, ContentType: 'video/mp2t', Metadata: { sha256: sha } }));
  });

  afterAll(async () => {
    client?.destroy();
    await s3?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('reads a whole object with its sha256 metadata', async () => {
    const obj = await reader.getObject('vod/t1/a.ts');
    expect(obj.size).toBe(body.length);
    expect(obj.body.equals(body)).toBe(true);
    expect(obj.sha256).toBe(sha);
    expect(obj.contentType).toBe('video/mp2t');
  });

  it('reads a byte range and reports the whole size', async () => {
    const obj = await reader.getObject('vod/t1/a.ts', { start: 10, end: 19 });
    expect(obj.body.equals(body.subarray(10, 20))).toBe(true);
    expect(obj.range).toEqual({ start: 10, end: 19 });
    expect(obj.size).toBe(body.length);
  });

  it('gives NOT_FOUND for a missing key, without retrying into a timeout', async () => {
    const err = await reader.getObject('vod/t1/missing.ts').catch((e: unknown) => e);
    expect(isOcdnError(err, ErrorCodes.NOT_FOUND)).toBe(true);
  });

  it('gives ORIGIN_UNAVAILABLE when nothing listens', async () => {
    const dead = createS3Client({ s3Endpoint: 'http://127.0.0.1:1', s3Region: 'us-east-1', forcePathStyle: true, ...EMBEDDED_CREDENTIALS }, { maxAttempts: 1 });
    const r = new OriginReader({ client: dead, bucket: BUCKET, timeoutMs: 1_000, retries: 1, baseBackoffMs: 5 });
    const err = await r.getObject('vod/t1/a.ts').catch((e: unknown) => e);
    expect(isOcdnError(err, ErrorCodes.ORIGIN_UNAVAILABLE)).toBe(true);
    dead.destroy();
  });
});

/**
 * A loopback proxy in front of the embedded S3 that answers the next N GETs itself with an S3
 * error (as a throttling or misconfigured S3 would), so the reader's retries can be counted.
 */
describe('origin reader retries: only what can get better', () => {
  let s3: EmbeddedS3;
  let dir: string;
  let proxy: import('node:http').Server;
  let client: S3Client;
  let gets = 0;
  let failNext: { count: number; status: number; code: string } = { count: 0, status: 0, code: '' };
  const body = Buffer.from('segment bytes');

  beforeAll(async () => {
    const { createServer, request } = await import('node:http');
    dir = await mkdtemp(join(tmpdir(), 'ocdn-reader-retry-'));
    s3 = await startEmbeddedS3({ dir, port: 0, bucket: BUCKET });
    const upstream = new URL(s3.endpoint);
    proxy = createServer((req, res) => {
      if (req.method === 'GET' && req.url?.includes('/vod/')) {
        gets++;
        if (failNext.count > 0) {
          failNext.count--;
          req.resume();
          res.writeHead(failNext.status, { 'content-type': 'application/xml' });
          res.end(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>${failNext.code}</Code><Message>injected</Message></Error>`);
          return;
        }
      }
      const up = request({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
      });
      up.on('error', () => res.destroy());
      req.pipe(up);
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    const port = (proxy.address() as import('node:net').AddressInfo).port;
    // maxAttempts 1: the SDK does not retry, so every GET the proxy sees is the reader's.
    client = createS3Client(
      { s3Endpoint: `http://127.0.0.1:${port}`, s3Region: 'us-east-1', forcePathStyle: true, ...EMBEDDED_CREDENTIALS },
      { maxAttempts: 1 },
    );
    await client.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'vod/t1/b.ts', Body: body }));
  });

  afterAll(async () => {
    client?.destroy();
    proxy?.closeAllConnections();
    await new Promise((r) => proxy?.close(r));
    await s3?.close();
    await rm(dir, { recursive: true, force: true });
  });

  const reader = () => new OriginReader({ client, bucket: BUCKET, timeoutMs: 2_000, retries: 2, baseBackoffMs: 5 });

  it('retries 503 SlowDown with backoff and then succeeds', async () => {
    gets = 0;
    failNext = { count: 2, status: 503, code: 'SlowDown' };
    const obj = await reader().getObject('vod/t1/b.ts');
    expect(obj.body.equals(body)).toBe(true);
    expect(gets).toBe(3);
  });

  it('gives up after its retries on a lasting 500, as ORIGIN_UNAVAILABLE', async () => {
    gets = 0;
    failNext = { count: 10, status: 500, code: 'InternalError' };
    const err = await reader()
      .getObject('vod/t1/b.ts')
      .catch((e: unknown) => e);
    expect(isOcdnError(err, ErrorCodes.ORIGIN_UNAVAILABLE)).toBe(true);
    expect(gets).toBe(3);
    failNext.count = 0;
  });

  it('does not retry a 403 (retrying cannot fix credentials) or a 404', async () => {
    gets = 0;
    failNext = { count: 1, status: 403, code: 'AccessDenied' };
    const denied = await reader()
      .getObject('vod/t1/b.ts')
      .catch((e: unknown) => e);
    expect(isOcdnError(denied, ErrorCodes.ORIGIN_UNAVAILABLE)).toBe(true);
    expect(gets).toBe(1);
    gets = 0;
    const missing = await reader()
      .getObject('vod/t1/nope.ts')
      .catch((e: unknown) => e);
    expect(isOcdnError(missing, ErrorCodes.NOT_FOUND)).toBe(true);
    expect(gets).toBe(1);
  });
});

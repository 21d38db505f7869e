import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEmbeddedS3, type EmbeddedS3 } from '../../origin/s3-server.ts';
import { createS3Client, EMBEDDED_CREDENTIALS } from '../../origin/s3-config.ts';
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

import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CATALOG_KEY, contentKeys } from '../../common/contracts.ts';
import { ErrorCodes, isOcdnError } from '../../common/errors.ts';
import { parseCatalog } from '../../origin/catalog.ts';
import { parsePlaylist } from '../../origin/playlists.ts';
import { OriginReader } from '../../origin/reader.ts';
import { EMBEDDED_CREDENTIALS } from '../../origin/s3-config.ts';
import { createS3Client } from '../../origin/s3-client.ts';
import { startEmbeddedS3, type EmbeddedS3 } from '../../origin/s3-server.ts';
import { ensureBucket, putObjectIfChanged, seedContent, type SeedProgress } from '../../origin/seed.ts';
import { freePort } from '../../common/ports.ts';
import { segmentSize, sha256Hex, syntheticFromCatalog, syntheticSegment, verifySyntheticSegment } from '../../origin/synthetic.ts';

const BUCKET = 'ocdn-media';
const SEED = { titles: 2, durationSec: 18, segmentSec: 4, ladder: 'small' } as const; // 5 segments, last 2 s
const EXPECTED_OBJECTS = 2 * (1 + 3 * (1 + 5)) + 1;

function clientFor(endpoint: string, maxAttempts = 3): S3Client {
  return createS3Client({ s3Endpoint: endpoint, s3Region: 'us-east-1', forcePathStyle: true, ...EMBEDDED_CREDENTIALS }, { maxAttempts });
}

async function listAll(client: S3Client, bucket: string): Promise<Array<{ key: string; size: number }>> {
  const out: Array<{ key: string; size: number }> = [];
  let token: string | undefined;
  do {
    const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, ContinuationToken: token }));
    for (const o of page.Contents ?? []) out.push({ key: o.Key!, size: o.Size! });
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return out;
}

describe('seedContent into the embedded S3', () => {
  let dir: string;
  let s3: EmbeddedS3;
  let client: S3Client;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ocdn-seed-'));
    s3 = await startEmbeddedS3({ dir, port: 0, bucket: BUCKET });
    client = clientFor(s3.endpoint);
  });

  afterAll(async () => {
    client?.destroy();
    await s3?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('seeds 2 titles; every object reads back with the size and SHA-256 it was written with', async () => {
    const progress: SeedProgress[] = [];
    const result = await seedContent({ client, bucket: BUCKET, endpoint: s3.endpoint, ...SEED, concurrency: 4, onProgress: (p) => progress.push(p) });
    expect(result.objects).toBe(EXPECTED_OBJECTS);
    expect(result.uploaded).toBe(EXPECTED_OBJECTS);
    expect(result.skipped).toBe(0);
    expect(result.bytes).toBe(result.totalBytes);
    expect(progress).toHaveLength(EXPECTED_OBJECTS);
    expect(progress.at(-1)).toMatchObject({
      done: EXPECTED_OBJECTS,
      total: EXPECTED_OBJECTS,
      uploaded: EXPECTED_OBJECTS,
      bytes: result.bytes,
      key: CATALOG_KEY,
    });

    const listed = await listAll(client, BUCKET);
    expect(listed).toHaveLength(EXPECTED_OBJECTS);
    expect(listed.reduce((a, o) => a + o.size, 0)).toBe(result.bytes);

    const catalog = parseCatalog(await (await client.send(new GetObjectCommand({ Bucket: BUCKET, Key: CATALOG_KEY }))).Body!.transformToString('utf8'));
    expect(catalog.titles.map((t) => t.id)).toEqual(['title-0001', 'title-0002']);
    expect(catalog).toEqual(result.catalog);

    const expectedKeys = new Set<string>([CATALOG_KEY]);
    let segments = 0;
    for (const title of catalog.titles) {
      expectedKeys.add(contentKeys.master(title.id));
      for (const r of title.renditions) {
        expectedKeys.add(contentKeys.media(title.id, r.name));
        for (let i = 0; i < title.segments; i++) expectedKeys.add(contentKeys.segment(title.id, r.name, i));
      }
    }
    expect(new Set(listed.map((o) => o.key))).toEqual(expectedKeys);

    for (const { key, size } of listed) {
      const out = await client.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
      const body = Buffer.from(await out.Body!.transformToByteArray());
      expect(body.length, key).toBe(size);
      expect(out.ContentLength, key).toBe(size);
      expect(out.Metadata?.sha256, key).toBe(sha256Hex(body));
      const seg = /^vod\/([^/]+)\/([^/]+)\/seg-(\d{5})\.ts$/.exec(key);
      if (seg) {
        segments++;
        expect(out.ContentType).toBe('video/mp2t');
        const spec = syntheticFromCatalog(catalog.titles.find((t) => t.id === seg[1])!, seg[2]!);
        expect(size, key).toBe(segmentSize(spec, Number(seg[3])));
        expect(verifySyntheticSegment(spec, Number(seg[3]), body), key).toEqual({ ok: true });
      } else if (key.endsWith('.m3u8')) {
        expect(out.ContentType).toBe('application/vnd.apple.mpegurl');
        expect(() => parsePlaylist(body.toString('utf8'))).not.toThrow();
      } else {
        expect(out.ContentType).toBe('application/json');
      }
    }
    expect(segments).toBe(2 * 3 * 5);
  });

  it('re-seeding uploads nothing and leaves catalog.json as it was', async () => {
    const before = await client.send(new HeadObjectCommand({ Bucket: BUCKET, Key: CATALOG_KEY }));
    const again = await seedContent({ client, bucket: BUCKET, endpoint: s3.endpoint, ...SEED });
    expect(again).toMatchObject({ uploaded: 0, skipped: EXPECTED_OBJECTS, bytes: 0, objects: EXPECTED_OBJECTS });
    const after = await client.send(new HeadObjectCommand({ Bucket: BUCKET, Key: CATALOG_KEY }));
    expect(after.ETag).toBe(before.ETag);
    expect(after.LastModified).toEqual(before.LastModified);
  });

  it('re-seeding repairs exactly the object whose bytes changed', async () => {
    const key = contentKeys.segment('title-0002', '1100k', 3);
    await client.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: Buffer.from('corrupt'), Metadata: { sha256: sha256Hex('corrupt') } }));
    const repaired = await seedContent({ client, bucket: BUCKET, endpoint: s3.endpoint, ...SEED });
    expect(repaired).toMatchObject({ uploaded: 1, skipped: EXPECTED_OBJECTS - 1 });
    const reader = new OriginReader({ client, bucket: BUCKET });
    const obj = await reader.getObject(key);
    const spec = { title: 'title-0002', rendition: '1100k', bitrate: 1_100_000, durationSec: SEED.durationSec, segmentSec: SEED.segmentSec };
    expect(obj.body.equals(syntheticSegment(spec, 3))).toBe(true);
    expect(obj.sha256).toBe(sha256Hex(obj.body));
  });

  it('more titles: uploads only the new title and a catalog listing all of them', async () => {
    const more = await seedContent({ client, bucket: BUCKET, endpoint: s3.endpoint, ...SEED, titles: 3 });
    expect(more.uploaded).toBe(1 + 3 * (1 + 5) + 1); // title-0003 + catalog
    expect(more.catalog.titles.map((t) => t.popularityRank)).toEqual([1, 2, 3]);
  });

  it('seeding is additive: --first-title adds titles, fewer titles keep the catalog as it is', async () => {
    const added = await seedContent({ client, bucket: BUCKET, endpoint: s3.endpoint, ...SEED, titles: 1, firstTitle: 5 });
    expect(added.catalog.titles.map((t) => t.id)).toEqual(['title-0001', 'title-0002', 'title-0003', 'title-0005']);
    const fewer = await seedContent({ client, bucket: BUCKET, endpoint: s3.endpoint, ...SEED, titles: 1 });
    expect(fewer.uploaded).toBe(0);
    expect(fewer.catalog.titles).toHaveLength(4);
  });

  it('uploads large objects with multipart, with sha256 metadata, and skips them next time', async () => {
    const commands: string[] = [];
    const spy = createS3Client({ s3Endpoint: s3.endpoint, s3Region: 'us-east-1', forcePathStyle: true, ...EMBEDDED_CREDENTIALS });
    spy.middlewareStack.add(
      (next, context) => (args) => {
        commands.push(context.commandName ?? '?');
        return next(args);
      },
      { step: 'initialize' },
    );
    try {
      const body = Buffer.alloc(11 * 1024 * 1024 + 17, 0xab);
      const obj = { key: 'test/big.bin', body, contentType: 'application/octet-stream' };
      expect(await putObjectIfChanged(spy, BUCKET, obj, { multipartThresholdBytes: 5 * 1024 * 1024 })).toBe(true);
      expect(commands.filter((c) => c === 'UploadPartCommand')).toHaveLength(3); // 5 + 5 + 1 MiB
      expect(commands).toContain('CompleteMultipartUploadCommand');
      expect(commands).not.toContain('PutObjectCommand');
      const head = await client.send(new HeadObjectCommand({ Bucket: BUCKET, Key: obj.key }));
      expect(head.ContentLength).toBe(body.length);
      expect(head.Metadata?.sha256).toBe(sha256Hex(body));
      expect(await putObjectIfChanged(spy, BUCKET, obj, { multipartThresholdBytes: 5 * 1024 * 1024 })).toBe(false);
      // Small objects take one plain PUT.
      commands.length = 0;
      expect(await putObjectIfChanged(spy, BUCKET, { ...obj, key: 'test/small.bin', body: body.subarray(0, 1000) })).toBe(true);
      expect(commands).toEqual(['HeadObjectCommand', 'PutObjectCommand']);
    } finally {
      spy.destroy();
    }
  });

  it('creates a missing bucket', async () => {
    expect(await ensureBucket(client, 'fresh-bucket', { endpoint: s3.endpoint })).toBe('created');
    expect(await ensureBucket(client, 'fresh-bucket', { endpoint: s3.endpoint })).toBe('exists');
    const err = await ensureBucket(client, 'absent-bucket', { endpoint: s3.endpoint, create: false }).catch((e: unknown) => e);
    expect(isOcdnError(err, ErrorCodes.NOT_FOUND)).toBe(true);
  });
});

describe('seedContent when S3 is not there', () => {
  const opts = { bucket: BUCKET, ...SEED };

  it('refused connection: S3_UNREACHABLE naming the endpoint, nothing else attempted', async () => {
    const port = await freePort();
    const endpoint = `http://127.0.0.1:${port}`;
    const client = clientFor(endpoint, 1);
    try {
      const err = await seedContent({ client, endpoint, ...opts }).catch((e: unknown) => e);
      expect(isOcdnError(err, ErrorCodes.S3_UNREACHABLE)).toBe(true);
      expect((err as Error).message).toContain(endpoint);
      expect((err as Error).message).toContain('ECONNREFUSED');
    } finally {
      client.destroy();
    }
  });

  it('a server that accepts but never answers: S3_UNREACHABLE after the check timeout, not the SDK timeouts', async () => {
    const sockets = new Set<Socket>();
    const server: Server = createServer((s) => {
      sockets.add(s);
      s.on('error', () => {});
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const endpoint = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    const client = clientFor(endpoint, 3);
    try {
      const err = await seedContent({ client, endpoint, ...opts, checkTimeoutMs: 300 }).catch((e: unknown) => e);
      expect(isOcdnError(err, ErrorCodes.S3_UNREACHABLE)).toBe(true);
      expect((err as Error).message).toMatch(/did not answer HeadBucket within 300 ms/);
    } finally {
      client.destroy();
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    }
  });

  it('bad options are config errors before any network call', async () => {
    const client = clientFor('http://127.0.0.1:1', 1);
    try {
      for (const bad of [{ titles: 0 }, { titles: 1.5 }, { segmentSec: 0 }, { durationSec: -1 }, { ladder: 'nope' }]) {
        const err = await seedContent({ client, ...opts, ...bad }).catch((e: unknown) => e);
        expect(isOcdnError(err, ErrorCodes.CONFIG), JSON.stringify(bad)).toBe(true);
      }
    } finally {
      client.destroy();
    }
  });
});

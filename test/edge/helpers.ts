import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { Agent, request } from 'undici';
import { readMetric } from '../../common/metrics.ts';
import { type ByteRange, OriginReader, type OriginObject, type OriginStream } from '../../origin/reader.ts';
import { EMBEDDED_CREDENTIALS } from '../../origin/s3-config.ts';
import { createS3Client } from '../../origin/s3-client.ts';
import { startEmbeddedS3, type EmbeddedS3 } from '../../origin/s3-server.ts';
import type { Edge } from '../../edge/server.ts';

export const BUCKET = 'ocdn-media';

/** Deterministic bytes (a cheap xorshift), so every test object is distinct and checkable. */
export function bytes(n: number, seed = 1): Buffer {
  const b = Buffer.allocUnsafe(n);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    b[i] = x & 0xff;
  }
  return b;
}

export const sha256 = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex');

export interface TestOrigin {
  s3: EmbeddedS3;
  client: S3Client;
  reader: OriginReader;
  /** Puts `body` at `key` (no leading slash) with its sha256 in metadata, as the packager does. */
  put(key: string, body: Buffer | string, contentType?: string): Promise<Buffer>;
  /** Stops the S3 server (an origin outage); close() still cleans up. */
  stop(): Promise<void>;
  close(): Promise<void>;
}

export async function startOrigin(opts: { readerTimeoutMs?: number } = {}): Promise<TestOrigin> {
  const dir = await mkdtemp(join(tmpdir(), 'ocdn-edge-'));
  const s3 = await startEmbeddedS3({ dir, port: 0, bucket: BUCKET });
  const client = createS3Client({ s3Endpoint: s3.endpoint, s3Region: 'us-east-1', forcePathStyle: true, ...EMBEDDED_CREDENTIALS }, { maxAttempts: 1 });
  const reader = new OriginReader({ client, bucket: BUCKET, timeoutMs: opts.readerTimeoutMs ?? 3_000, retries: 1, baseBackoffMs: 10 });
  let closed = false;
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await s3.close();
  };
  return {
    s3,
    client,
    reader,
    async put(key, body, contentType) {
      const buf = typeof body === 'string' ? Buffer.from(body) : body;
      await client.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: buf, ContentType: contentType, Metadata: { sha256: sha256(buf) } }));
      return buf;
    },
    stop,
    async close() {
      if (closed) return;
      closed = true;
      client.destroy();
      await stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * An origin reader whose GETs wait at a gate until the test opens it: makes "N requests
 * arrive while one fetch is in flight" a fact rather than a race.
 */
export class GatedReader extends OriginReader {
  private open!: () => void;
  private gate = new Promise<void>((r) => (this.open = r));
  calls = 0;

  release(): void {
    this.open();
  }

  reset(): void {
    this.gate = new Promise<void>((r) => (this.open = r));
  }

  override async getObject(key: string, range?: ByteRange): Promise<OriginObject> {
    this.calls++;
    await this.gate;
    return super.getObject(key, range);
  }

  override async getObjectStream(key: string): Promise<OriginStream> {
    this.calls++;
    await this.gate;
    return super.getObjectStream(key);
  }
}

export interface Res {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

const agent = new Agent({ connections: 256, keepAliveTimeout: 1_000 });

export async function get(url: string, headers: Record<string, string> = {}, method = 'GET'): Promise<Res> {
  const res = await request(url, { method: method as 'GET', headers, dispatcher: agent });
  const body = Buffer.from(await res.body.arrayBuffer());
  const h: Record<string, string> = {};
  for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) h[k] = Array.isArray(v) ? v.join(', ') : v;
  return { status: res.statusCode, headers: h, body };
}

export async function post(url: string, body: unknown, headers: Record<string, string> = {}): Promise<Res> {
  const res = await request(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
    dispatcher: agent,
  });
  const buf = Buffer.from(await res.body.arrayBuffer());
  const h: Record<string, string> = {};
  for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) h[k] = Array.isArray(v) ? v.join(', ') : v;
  return { status: res.statusCode, headers: h, body: buf };
}

/**
 * A GET with the path exactly as written: fetch/undici normalise `..` and some escapes away
 * before sending, which would hide what a hostile client can put on the wire.
 */
export function rawGet(baseUrl: string, path: string): Promise<{ status: number; body: string }> {
  const u = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: u.hostname, port: u.port, path, method: 'GET', agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

export async function metric(edge: Edge, name: string, labels: Record<string, string> = {}): Promise<number> {
  return readMetric(await edge.registry.metrics(), name, labels);
}

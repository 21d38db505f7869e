import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Catalog } from '../../common/contracts.ts';
import { startEdge, type Edge } from '../../edge/server.ts';
import { OriginReader } from '../../origin/reader.ts';
import { EMBEDDED_CREDENTIALS } from '../../origin/s3-config.ts';
import { createS3Client } from '../../origin/s3-client.ts';
import { startEmbeddedS3, type EmbeddedS3 } from '../../origin/s3-server.ts';
import { seedContent } from '../../origin/seed.ts';
import { TEST_EDGE_KEY } from '../steering/helpers.ts';

export const BUCKET = 'ocdn-media';

export interface TestCdn {
  s3: EmbeddedS3;
  catalog: Catalog;
  edges: Edge[];
  reader: OriginReader;
  close(): Promise<void>;
}

/** Embedded S3 seeded with synthetic titles, and real edges (tokens off) in front of it. */
export async function startTestCdn(opts: { titles: number; durationSec: number; ladder: string; edges: string[] }): Promise<TestCdn> {
  const dir = await mkdtemp(join(tmpdir(), 'ocdn-player-cdn-'));
  const s3 = await startEmbeddedS3({ dir, port: 0, bucket: BUCKET });
  const client = createS3Client({ s3Endpoint: s3.endpoint, s3Region: 'us-east-1', forcePathStyle: true, ...EMBEDDED_CREDENTIALS }, { maxAttempts: 2 });
  const edges: Edge[] = [];
  try {
    const seeded = await seedContent({
      client,
      bucket: BUCKET,
      titles: opts.titles,
      durationSec: opts.durationSec,
      segmentSec: 4,
      ladder: opts.ladder,
      concurrency: 4,
    });
    const reader = new OriginReader({ client, bucket: BUCKET, timeoutMs: 5_000, retries: 1 });
    for (const id of opts.edges)
      edges.push(
        await startEdge({
          edgeKey: TEST_EDGE_KEY,
          id,
          port: 0,
          region: 'local',
          capacityBytes: 256 * 1024 * 1024,
          origin: reader,
          tokenSecret: null,
          drainTimeoutMs: 1_000,
        }),
      );
    return {
      s3,
      catalog: seeded.catalog,
      edges,
      reader,
      async close() {
        await Promise.allSettled(edges.map((e) => e.close()));
        client.destroy();
        await s3.close();
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await Promise.allSettled(edges.map((e) => e.close()));
    client.destroy();
    await s3.close();
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

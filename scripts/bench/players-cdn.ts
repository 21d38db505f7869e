/**
 * The local CDN the real-HTTP players benchmark plays against, in its own process so the
 * players' process is measured alone: embedded S3 seeded with synthetic titles and a few edges
 * (tokens off). Prints one JSON line {"edges":[…],"titles":[…]} when ready; stops on SIGTERM.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startEdge, type Edge } from '../../edge/server.ts';
import { OriginReader } from '../../origin/reader.ts';
import { EMBEDDED_CREDENTIALS } from '../../origin/s3-config.ts';
import { createS3Client } from '../../origin/s3-client.ts';
import { startEmbeddedS3 } from '../../origin/s3-server.ts';
import { seedContent } from '../../origin/seed.ts';

const { values } = parseArgs({
  options: {
    edges: { type: 'string', default: '2' },
    titles: { type: 'string', default: '3' },
    duration: { type: 'string', default: '120' },
    ladder: { type: 'string', default: 'small' },
  },
});
const bucket = 'ocdn-media';
const dir = await mkdtemp(join(tmpdir(), 'ocdn-bench-players-'));
const s3 = await startEmbeddedS3({ dir, port: 0, bucket });
const client = createS3Client({ s3Endpoint: s3.endpoint, s3Region: 'us-east-1', forcePathStyle: true, ...EMBEDDED_CREDENTIALS }, { maxAttempts: 3 });
const seeded = await seedContent({
  client,
  bucket,
  titles: Number(values.titles),
  durationSec: Number(values.duration),
  segmentSec: 4,
  ladder: values.ladder!,
  concurrency: 8,
});
const reader = new OriginReader({ client, bucket });
const edges: Edge[] = [];
for (let i = 1; i <= Number(values.edges); i++) {
  edges.push(await startEdge({ id: `bench-edge-${i}`, port: 0, region: 'local', capacityBytes: 2 * 1024 ** 3, origin: reader, tokenSecret: null }));
}
process.stdout.write(`${JSON.stringify({ edges: edges.map((e) => e.url), titles: seeded.catalog.titles.map((t) => t.id) })}\n`);

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  await Promise.allSettled(edges.map((e) => e.close()));
  client.destroy();
  await s3.close();
  await rm(dir, { recursive: true, force: true });
  process.exit(0);
};
process.on('SIGTERM', () => void stop());
process.on('SIGINT', () => void stop());
// The parent going away (stdin closes) also stops us, so a killed benchmark leaves nothing behind.
process.stdin.on('end', () => void stop());
process.stdin.resume();

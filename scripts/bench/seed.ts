/**
 * Seed throughput into the embedded S3: starts `ocdn origin serve` (its own process, as in a
 * real deployment, so s3rver and the seeder each get a core) on a free port over a scratch
 * folder, runs seedContent, prints seconds, bytes and MB/s, then deletes the data (unless --keep).
 *
 *   npm run bench:seed -- [--titles 20] [--duration 600] [--segment 4] [--ladder apple]
 *                         [--concurrency 8] [--dir <scratch parent>] [--keep]
 */
import { execFileSync, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { mkdtemp, rm, statfs } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { getLadder } from '../../origin/ladder.ts';
import { EMBEDDED_CREDENTIALS } from '../../origin/s3-config.ts';
import { createS3Client } from '../../origin/s3-client.ts';
import { seedContent } from '../../origin/seed.ts';

const { values } = parseArgs({
  options: {
    titles: { type: 'string', default: '20' },
    duration: { type: 'string', default: '600' },
    segment: { type: 'string', default: '4' },
    ladder: { type: 'string', default: 'apple' },
    concurrency: { type: 'string', default: '8' },
    dir: { type: 'string', default: tmpdir() },
    keep: { type: 'boolean', default: false },
  },
});
const titles = Number(values.titles);
const durationSec = Number(values.duration);
const segmentSec = Number(values.segment);
const concurrency = Number(values.concurrency);

// Refuse to start a run that cannot fit: a full disk would hurt every other process on the box.
const expectedBytes = (titles * durationSec * getLadder(values.ladder).reduce((a, r) => a + r.bitrate, 0)) / 8;
const fs = await statfs(values.dir);
const free = fs.bavail * fs.bsize;
if (expectedBytes * 1.1 > free) {
  console.error(`bench:seed: needs ~${(expectedBytes / 1e9).toFixed(1)} GB, only ${(free / 1e9).toFixed(1)} GB free under ${values.dir}`);
  process.exit(1);
}

const dir = await mkdtemp(join(values.dir, 'ocdn-bench-seed-'));
const origin = spawn(process.execPath, [join(import.meta.dirname, '..', '..', 'bin', 'ocdn.js'), 'origin', 'serve', '--port', '0', '--dir', dir], {
  env: { ...process.env, OCDN_LOG_LEVEL: 'info' },
  stdio: ['ignore', 'pipe', 'inherit'],
});
let endpoint: string | undefined;
for await (const line of createInterface({ input: origin.stdout! })) {
  const rec = JSON.parse(line) as { msg?: string; endpoint?: string };
  if (rec.msg === 'origin listening') {
    endpoint = rec.endpoint;
    break;
  }
}
if (!endpoint) {
  console.error('bench:seed: the origin did not start');
  process.exit(1);
}
origin.stdout!.resume();
const originExited = new Promise((r) => origin.on('exit', r));
const s3 = { endpoint };
const client = createS3Client({ s3Endpoint: s3.endpoint, s3Region: 'us-east-1', forcePathStyle: true, ...EMBEDDED_CREDENTIALS });
console.log(
  `bench:seed: ${titles} titles × ${durationSec}s × ${values.ladder} ladder, ${segmentSec}s segments, concurrency ${concurrency} → ${s3.endpoint} (${dir}); expecting ~${(expectedBytes / 1e9).toFixed(1)} GB`,
);

let lastDecile = -1;
const started = process.hrtime.bigint();
try {
  const result = await seedContent({
    client,
    bucket: 'ocdn-media',
    endpoint: s3.endpoint,
    titles,
    durationSec,
    segmentSec,
    ladder: values.ladder,
    concurrency,
    onProgress: (p) => {
      const decile = Math.floor((p.done / p.total) * 10);
      if (decile > lastDecile) {
        lastDecile = decile;
        const s = Number(process.hrtime.bigint() - started) / 1e9;
        console.log(`  ${decile * 10}% ${p.done}/${p.total} objects ${(p.bytes / 1e9).toFixed(2)} GB ${s.toFixed(0)} s`);
      }
    },
  });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const onDisk = Number(execFileSync('du', ['-sb', dir], { encoding: 'utf8' }).split('\t')[0]);
  const summary = {
    titles,
    durationSec,
    segmentSec,
    ladder: values.ladder,
    concurrency,
    objects: result.objects,
    uploaded: result.uploaded,
    seconds: Number(seconds.toFixed(1)),
    bytes: result.bytes,
    bytesOnDisk: onDisk,
    mbPerSec: Number((result.bytes / 1e6 / seconds).toFixed(1)),
    objectsPerSec: Number((result.objects / seconds).toFixed(0)),
  };
  console.log(
    `bench:seed: ${summary.seconds} s, ${(summary.bytes / 1e9).toFixed(2)} GB (${summary.bytes} bytes, ${(onDisk / 1e9).toFixed(2)} GB on disk), ${summary.mbPerSec} MB/s, ${summary.objectsPerSec} objects/s`,
  );
  console.log(JSON.stringify(summary));
} finally {
  client.destroy();
  origin.kill('SIGTERM');
  await originExited;
  if (!values.keep) await rm(dir, { recursive: true, force: true });
}

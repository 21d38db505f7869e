import type { S3Client } from '@aws-sdk/client-s3';
import type { Command } from 'commander';
import type { Catalog } from '../common/contracts.ts';
import { addDirOption, explain, loadCommandConfig } from '../common/command-config.ts';
import { ErrorCodes } from '../common/errors.ts';
import { formatBytes } from '../common/units.ts';
import { LADDER_NAMES } from '../origin/ladder.ts';
import { addS3Options, normalizeS3Flags, s3ConfigSpec } from '../origin/s3-config.ts';
import type { createS3Client } from '../origin/s3-client.ts';
import { DEFAULT_MASTER } from '../origin/catalog.ts';
import type { SeedProgress } from '../origin/seed.ts';

export const seedSpec = {
  titles: { type: 'int', flag: '--titles', default: 20, min: 1, max: 9_999 },
  duration: { type: 'number', flag: '--duration', default: 600, min: 1, max: 86_400 },
  segment: { type: 'number', flag: '--segment', default: 4, min: 1, max: 60 },
  ladder: { type: 'enum', flag: '--ladder', values: LADDER_NAMES, default: 'apple' },
  mode: { type: 'enum', flag: '--mode', values: ['synthetic', 'ffmpeg'], default: 'synthetic' },
  concurrency: { type: 'int', flag: '--concurrency', default: 8, min: 1, max: 256 },
  firstTitle: { type: 'int', flag: '--first-title', default: 1, min: 1, max: 9_999 },
  json: { type: 'bool', flag: '--json', default: false },
  progress: { type: 'bool', flag: '--progress', default: true },
  ...s3ConfigSpec,
} as const;

export const importSpec = {
  fromDir: { type: 'string', flag: '--from-dir' },
  master: { type: 'string', flag: '--master', default: DEFAULT_MASTER },
  rank: { type: 'int', flag: '--rank', min: 1, max: 1_000_000 },
  concurrency: { type: 'int', flag: '--concurrency', default: 8, min: 1, max: 256 },
  json: { type: 'bool', flag: '--json', default: false },
  progress: { type: 'bool', flag: '--progress', default: true },
  ...s3ConfigSpec,
} as const;

const lsSpec = { json: { type: 'bool', flag: '--json', default: false }, ...s3ConfigSpec } as const;

/** S3 calls from the CLI: few retries so a dead endpoint fails in seconds, not minutes. */
async function clientFor(cfg: Parameters<typeof createS3Client>[0]): Promise<S3Client> {
  // The SDK and what uses it load when a command runs: the CLI registering these does not pay for them.
  const { createS3Client } = await import('../origin/s3-client.ts');
  return createS3Client(cfg, { maxAttempts: 2, connectTimeoutMs: 2_000, requestTimeoutMs: 60_000 });
}

/**
 * On a terminal: one line redrawn in place (\r), at most 10 times a second. Otherwise (CI, a
 * pipe, a log file): a plain line every 10%, so logs show progress without thousands of lines.
 */
export function progressReporter(out: NodeJS.WriteStream, started = Date.now()): { update(p: SeedProgress): void; finish(): void } {
  const tty = out.isTTY === true;
  let lastDraw = 0;
  let lastDecile = -1;
  let drawn = false;
  const describe = (p: SeedProgress) => {
    const secs = Math.max(0.001, (Date.now() - started) / 1000);
    return `${p.done}/${p.total} objects, ${formatBytes(p.bytes)} uploaded (${formatBytes(p.bytes / secs)}/s), ${p.skipped} unchanged`;
  };
  return {
    update(p) {
      const frac = p.total > 0 ? Math.min(1, p.done / p.total) : 0;
      if (tty) {
        const now = Date.now();
        if (now - lastDraw < 100 && p.done < p.total) return;
        lastDraw = now;
        const width = 24;
        const filled = Math.round(frac * width);
        const what = p.phase === 'encode' ? `encoding ${p.key} ` : '';
        const line = `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${(frac * 100).toFixed(0).padStart(3)}% ${what}${describe(p)}`;
        out.write(`\r${line.slice(0, (out.columns ?? 120) - 1)}\x1b[K`);
        drawn = true;
      } else {
        const decile = Math.floor(frac * 10);
        if (p.phase === 'encode') out.write(`seed: encoding ${p.key}\n`);
        else if (decile > lastDecile) {
          lastDecile = decile;
          out.write(`seed: ${(frac * 100).toFixed(0)}% ${describe(p)}\n`);
        }
      }
    },
    finish() {
      if (tty && drawn) out.write('\n');
      drawn = false;
    },
  };
}

export function registerContent(program: Command): void {
  const content = program.command('content').description('package titles into HLS and seed the S3 bucket');

  addS3Options(
    addDirOption(content.command('seed'))
      .description('package titles into HLS (master + media playlists + segments) and upload them with catalog.json; re-runs skip unchanged objects')
      .option('--titles <n>', 'number of titles [default 20]')
      .option('--duration <seconds>', 'length of each title [default 600]')
      .option('--segment <seconds>', 'segment length [default 4]')
      .option('--ladder <name>', `bit-rate ladder: ${LADDER_NAMES.join(' | ')} [default apple]`)
      .option('--mode <mode>', 'synthetic (fast, verifiable bytes) | ffmpeg (real test-pattern video) [default synthetic]')
      .option('--concurrency <n>', 'objects uploaded at once [default 8]')
      .option('--first-title <n>', 'number of the first title, to add titles to a bucket [default 1]')
      .option('--json', 'print the result as JSON')
      .option('--no-progress', 'no progress output'),
  ).action(async (flags: Record<string, unknown>) => {
    const { cfg, ctx } = loadCommandConfig(seedSpec, normalizeS3Flags(flags));
    const client = await clientFor(cfg);
    const { seedContent } = await import('../origin/seed.ts');
    const reporter = cfg.progress ? progressReporter(process.stderr) : undefined;
    try {
      const result = await seedContent({
        client,
        bucket: cfg.bucket,
        endpoint: cfg.s3Endpoint,
        titles: cfg.titles,
        durationSec: cfg.duration,
        segmentSec: cfg.segment,
        ladder: cfg.ladder,
        mode: cfg.mode as 'synthetic' | 'ffmpeg',
        concurrency: cfg.concurrency,
        firstTitle: cfg.firstTitle,
        onProgress: reporter ? (p) => reporter.update(p) : undefined,
      });
      reporter?.finish();
      const summary = {
        endpoint: cfg.s3Endpoint,
        bucket: cfg.bucket,
        titles: result.catalog.titles.length,
        objects: result.objects,
        uploaded: result.uploaded,
        skipped: result.skipped,
        bytesUploaded: result.bytes,
        bytesTotal: result.totalBytes,
        seconds: result.elapsedMs / 1000,
      };
      if (cfg.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
      else {
        process.stdout.write(
          `seeded ${summary.titles} titles (${cfg.ladder} ladder, ${cfg.duration}s, ${cfg.segment}s segments) into s3://${cfg.bucket} at ${cfg.s3Endpoint}: ` +
            `${result.objects} objects, ${result.uploaded} uploaded, ${result.skipped} unchanged, ${formatBytes(result.bytes)} written in ${summary.seconds.toFixed(1)} s\n`,
        );
      }
    } catch (err) {
      throw explain(err, [ErrorCodes.S3_UNREACHABLE], seedSpec, cfg, 's3Endpoint', ctx);
    } finally {
      reporter?.finish();
      client.destroy();
    }
  });

  addS3Options(
    addDirOption(content.command('import <title>'))
      .description(
        'register an HLS package made elsewhere (ffmpeg: mpegts, fMP4 with EXT-X-MAP, single file with BYTERANGE) as <title>: checks every URI is relative and inside the title, ' +
          'every object is there, hashes them (vod/<title>/hashes.json) and adds the title to catalog.json',
      )
      .option('--from-dir <dir>', 'upload the package from this folder to vod/<title>/ first [default: it is already in the bucket under vod/<title>/]')
      .option('--master <name>', 'file name of the master playlist at the top of the package; copied to master.m3u8 when different [default master.m3u8]')
      .option('--rank <n>', 'popularity rank (1 = most watched) [default: after every catalog title]')
      .option('--concurrency <n>', 'objects uploaded or hashed at once [default 8]')
      .option('--json', 'print the result as JSON')
      .option('--no-progress', 'no progress output'),
  ).action(async (title: string, flags: Record<string, unknown>) => {
    const { cfg, ctx } = loadCommandConfig(importSpec, normalizeS3Flags(flags));
    const client = await clientFor(cfg);
    const { importTitle } = await import('../origin/import.ts');
    const reporter = cfg.progress ? progressReporter(process.stderr) : undefined;
    try {
      const result = await importTitle({
        client,
        bucket: cfg.bucket,
        endpoint: cfg.s3Endpoint,
        title,
        fromDir: cfg.fromDir,
        master: cfg.master,
        rank: cfg.rank,
        concurrency: cfg.concurrency,
        onProgress: reporter ? (p) => reporter.update({ ...p, phase: 'upload' }) : undefined,
      });
      reporter?.finish();
      const t = result.title;
      const summary = {
        endpoint: cfg.s3Endpoint,
        bucket: cfg.bucket,
        title: t.id,
        rank: t.popularityRank,
        container: t.container,
        layout: t.layout,
        durationSec: t.durationSec,
        segmentSec: t.segmentSec,
        segments: t.segments,
        renditions: t.renditions,
        manifest: t.manifest,
        objects: result.objects,
        uploaded: result.uploaded,
        skipped: result.skipped,
        bytesUploaded: result.bytes,
        catalogWritten: result.catalogWritten,
        catalogTitles: result.catalog.titles.length,
        seconds: result.elapsedMs / 1000,
      };
      if (cfg.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
      else {
        const rends = t.renditions.map((r) => `${r.name} ${r.width}x${r.height} ${formatBytes(r.bandwidth / 8)}/s`).join(', ');
        process.stdout.write(
          `imported ${t.id} (rank ${t.popularityRank}, ${t.container}/${t.layout}, ${t.durationSec}s, ${t.segments}×${t.segmentSec}s; ${rends}) into s3://${cfg.bucket} at ${cfg.s3Endpoint}: ` +
            `${result.objects} objects, ${result.uploaded} written, ${result.skipped} unchanged, ${formatBytes(result.bytes)} in ${summary.seconds.toFixed(1)} s; ` +
            `catalog.json ${result.catalogWritten ? 'updated' : 'unchanged'} (${result.catalog.titles.length} titles)\n`,
        );
      }
    } catch (err) {
      throw explain(err, [ErrorCodes.S3_UNREACHABLE], importSpec, cfg, 's3Endpoint', ctx);
    } finally {
      reporter?.finish();
      client.destroy();
    }
  });

  addS3Options(
    addDirOption(content.command('ls'))
      .description('show what the bucket holds: titles, objects, bytes (and catalog.json facts)')
      .option('--json', 'print as JSON'),
  ).action(async (flags: Record<string, unknown>) => {
    const { cfg, ctx } = loadCommandConfig(lsSpec, normalizeS3Flags(flags));
    const client = await clientFor(cfg);
    const { ensureBucket, readCatalog } = await import('../origin/seed.ts');
    try {
      await ensureBucket(client, cfg.bucket, { endpoint: cfg.s3Endpoint, create: false }).catch((err: unknown) => {
        throw explain(err, [ErrorCodes.S3_UNREACHABLE], lsSpec, cfg, 's3Endpoint', ctx);
      });
      const listing = await listBucket(client, cfg.bucket);
      const catalog = await readCatalog(client, cfg.bucket).catch(() => undefined);
      if (cfg.json) process.stdout.write(`${JSON.stringify({ endpoint: cfg.s3Endpoint, bucket: cfg.bucket, ...listing, catalog })}\n`);
      else process.stdout.write(formatListing(cfg.s3Endpoint, cfg.bucket, listing, catalog));
    } finally {
      client.destroy();
    }
  });
}

export interface BucketListing {
  objects: number;
  bytes: number;
  /** Per title prefix vod/{title}/; objects outside vod/ are counted under "(other)". */
  titles: Record<string, { objects: number; bytes: number }>;
}

export async function listBucket(client: S3Client, bucket: string): Promise<BucketListing> {
  const out: BucketListing = { objects: 0, bytes: 0, titles: {} };
  let token: string | undefined;
  const { ListObjectsV2Command } = await import('@aws-sdk/client-s3');
  do {
    const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, ContinuationToken: token, MaxKeys: 1000 }));
    for (const o of page.Contents ?? []) {
      const m = /^vod\/([^/]+)\//.exec(o.Key ?? '');
      const group = m ? m[1]! : '(other)';
      const t = (out.titles[group] ??= { objects: 0, bytes: 0 });
      t.objects++;
      t.bytes += o.Size ?? 0;
      out.objects++;
      out.bytes += o.Size ?? 0;
    }
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return out;
}

function formatListing(endpoint: string, bucket: string, listing: BucketListing, catalog: Catalog | undefined): string {
  const names = Object.keys(listing.titles)
    .filter((t) => t !== '(other)')
    .sort();
  const lines = [
    `s3://${bucket} at ${endpoint}: ${names.length} titles, ${listing.objects} objects, ${formatBytes(listing.bytes)}`,
    catalog ? `catalog.json: ${catalog.titles.length} titles, ladder ${catalog.ladder}, generated ${catalog.generatedAt}` : 'catalog.json: none',
  ];
  const rows = [['title', 'rank', 'duration', 'segments', 'renditions', 'objects', 'bytes']];
  for (const name of [...names, ...(listing.titles['(other)'] ? ['(other)'] : [])]) {
    const t = catalog?.titles.find((x) => x.id === name);
    const l = listing.titles[name]!;
    rows.push([
      name,
      t ? String(t.popularityRank) : '-',
      t ? `${t.durationSec}s` : '-',
      t ? `${t.segments}×${t.segmentSec}s` : '-',
      t ? t.renditions.map((r) => r.name).join(',') : '-',
      String(l.objects),
      formatBytes(l.bytes),
    ]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const r of rows)
    lines.push(
      r
        .map((c, i) => c.padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    );
  return `${lines.join('\n')}\n`;
}

import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GetObjectCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CATALOG_KEY } from '../../common/contracts.ts';
import { ErrorCodes, isOcdnError } from '../../common/errors.ts';
import { ffmpegArgs, findFfmpeg } from '../../origin/ffmpeg.ts';
import { getLadder } from '../../origin/ladder.ts';
import { parsePlaylist } from '../../origin/playlists.ts';
import { EMBEDDED_CREDENTIALS } from '../../origin/s3-config.ts';
import { createS3Client } from '../../origin/s3-client.ts';
import { startEmbeddedS3, type EmbeddedS3 } from '../../origin/s3-server.ts';
import { seedContent } from '../../origin/seed.ts';
import { sha256Hex } from '../../origin/synthetic.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const HAS_FFMPEG = spawnSync('ffmpeg', ['-hide_banner', '-encoders'], { encoding: 'utf8' }).stdout?.includes('libx264') ?? false;

describe('ffmpeg mode without ffmpeg', () => {
  it('findFfmpeg says how to install it', async () => {
    const err = await findFfmpeg('/nonexistent/ffmpeg').catch((e: unknown) => e);
    expect(isOcdnError(err, ErrorCodes.DEPENDENCY_MISSING)).toBe(true);
    expect((err as Error).message).toContain('apt-get install ffmpeg');
  });

  it('`content seed --mode ffmpeg` fails with one line, before touching S3', async () => {
    const r = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const env: NodeJS.ProcessEnv = { ...process.env, OCDN_FFMPEG: '/nonexistent/ffmpeg' };
      delete env.OCDN_DEBUG;
      // Port 1: were S3 checked first, the error would be E_S3_UNREACHABLE instead.
      const child = spawn(process.execPath, [join(ROOT, 'bin', 'ocdn.js'), 'content', 'seed', '--mode', 'ffmpeg', '--s3-endpoint', 'http://127.0.0.1:1'], {
        cwd: ROOT,
        env,
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('close', (code) => resolve({ code, stderr }));
    });
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^ocdn: E_DEPENDENCY_MISSING: .*apt-get install ffmpeg/);
  });
});

describe('ffmpeg arguments', () => {
  it('force a key frame at every segment boundary and cut HLS segments with our names', () => {
    const rung = getLadder('small')[1]!;
    const args = ffmpegArgs({ rung, durationSec: 12, segmentSec: 4, outDir: '/out' });
    const val = (flag: string) => args[args.indexOf(flag) + 1];
    expect(args.join(' ')).toContain(`testsrc2=size=768x432:rate=30:duration=12`);
    expect(val('-g')).toBe('120');
    expect(val('-keyint_min')).toBe('120');
    expect(val('-sc_threshold')).toBe('0');
    expect(val('-hls_time')).toBe('4');
    expect(val('-hls_playlist_type')).toBe('vod');
    expect(val('-hls_segment_filename')).toBe('/out/seg-%05d.ts');
    expect(Number(val('-b:v')) + Number(val('-b:a'))).toBe(rung.bitrate); // audio inside the rung's budget
  });
});

describe.skipIf(!HAS_FFMPEG)('ffmpeg mode with ffmpeg installed', () => {
  let dir: string;
  let s3: EmbeddedS3;
  let client: S3Client;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ocdn-ffmpeg-'));
    s3 = await startEmbeddedS3({ dir: join(dir, 's3'), port: 0 });
    client = createS3Client({ s3Endpoint: s3.endpoint, s3Region: 'us-east-1', forcePathStyle: true, ...EMBEDDED_CREDENTIALS });
  });

  afterAll(async () => {
    client?.destroy();
    await s3?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('encodes a real test-pattern ladder, uploads it with hashes, and catalogs it as ffmpeg', async () => {
    const result = await seedContent({
      client,
      bucket: 'ocdn-media',
      endpoint: s3.endpoint,
      titles: 1,
      durationSec: 8,
      segmentSec: 4,
      ladder: 'small',
      mode: 'ffmpeg',
      workDir: dir,
      concurrency: 2,
    });
    const title = result.catalog.titles[0]!;
    expect(title).toMatchObject({ id: 'title-0001', mode: 'ffmpeg', container: 'ts', segments: 2 });
    const page = await client.send(new ListObjectsV2Command({ Bucket: 'ocdn-media' }));
    const keys = (page.Contents ?? []).map((o) => o.Key!).sort();
    expect(keys).toContain(CATALOG_KEY);
    expect(keys.filter((k) => k.endsWith('.ts'))).toHaveLength(3 * 2);
    for (const key of keys) {
      const out = await client.send(new GetObjectCommand({ Bucket: 'ocdn-media', Key: key }));
      const body = Buffer.from(await out.Body!.transformToByteArray());
      expect(out.Metadata?.sha256, key).toBe(sha256Hex(body));
      if (key.endsWith('.ts')) expect(body[0], key).toBe(0x47);
      if (key.endsWith('.m3u8')) expect(() => parsePlaylist(body.toString('utf8'))).not.toThrow();
    }
    for (const r of title.renditions) {
      expect(r.averageBandwidth).toBeGreaterThan(0);
      expect(r.bandwidth).toBeGreaterThanOrEqual(r.averageBandwidth);
    }
  });
});

import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { contentKeys, type CatalogRendition, type CatalogTitle } from '../common/contracts.ts';
import { ErrorCodes, OcdnError } from '../common/errors.ts';
import { PLAYLIST_CMSD_STATIC, segmentCmsdStatic } from './cmsd-static.ts';
import type { LadderRung } from './ladder.ts';
import { buildMasterPlaylist, buildMediaPlaylist, MEDIA_FILE, parsePlaylist, PLAYLIST_CONTENT_TYPE, segmentFileName } from './playlists.ts';
import type { SeedObject } from './seed.ts';

/**
 * --mode ffmpeg: a real, decodable test-pattern ladder (testsrc2 video + a sine tone), so
 * browsers and hls.js can play what the CDN serves. Slower than synthetic by orders of
 * magnitude; meant for a few short titles.
 */

const MISSING = 'ffmpeg is not installed: install it with `apt-get install ffmpeg` (Debian/Ubuntu) or use --mode synthetic';
const AUDIO_BITRATE = 48_000;

function run(bin: string, args: string[], signal?: AbortSignal): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { stdio: ['ignore', 'ignore', 'pipe'], signal });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-8_000); // keep the tail: that is where ffmpeg says why
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stderr }));
  });
}

/** The ffmpeg binary to use, checked to run and to have libx264; DEPENDENCY_MISSING otherwise. */
export async function findFfmpeg(bin = process.env.OCDN_FFMPEG ?? 'ffmpeg'): Promise<string> {
  let out: { code: number | null; stderr: string };
  try {
    out = await run(bin, ['-hide_banner', '-loglevel', 'error', '-f', 'lavfi', '-i', 'nullsrc=s=16x16:d=0.04', '-c:v', 'libx264', '-f', 'null', '-']);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new OcdnError(ErrorCodes.DEPENDENCY_MISSING, MISSING, { cause: err });
    throw err;
  }
  if (out.code !== 0) {
    throw new OcdnError(
      ErrorCodes.DEPENDENCY_MISSING,
      `${bin} cannot encode H.264 with libx264 (${out.stderr.trim().split('\n').pop() ?? 'unknown error'}); install Debian's ffmpeg with \`apt-get install ffmpeg\``,
    );
  }
  return bin;
}

/**
 * ffmpeg arguments for one rendition: fixed GOP = segment length so every segment starts with an IDR.
 * No drawtext overlay: it needs fonts that minimal images lack; testsrc2 already shows a clock.
 */
export function ffmpegArgs(opts: { rung: LadderRung; durationSec: number; segmentSec: number; outDir: string }): string[] {
  const { rung, durationSec, segmentSec, outDir } = opts;
  const fps = rung.frameRate;
  const video = Math.max(64_000, rung.bitrate - AUDIO_BITRATE);
  return [
    '-hide_banner',
    '-loglevel',
    'error',
    '-y',
    '-f',
    'lavfi',
    '-i',
    `testsrc2=size=${rung.width}x${rung.height}:rate=${fps}:duration=${durationSec}`,
    '-f',
    'lavfi',
    '-i',
    `sine=frequency=440:sample_rate=48000:duration=${durationSec}`,
    '-c:v',
    'libx264',
    '-profile:v',
    'high',
    '-preset',
    'veryfast',
    '-pix_fmt',
    'yuv420p',
    '-b:v',
    String(video),
    '-maxrate',
    String(Math.round(video * 1.5)),
    '-bufsize',
    String(video * 2),
    '-g',
    String(Math.round(fps * segmentSec)),
    '-keyint_min',
    String(Math.round(fps * segmentSec)),
    '-sc_threshold',
    '0',
    '-force_key_frames',
    `expr:gte(t,n_forced*${segmentSec})`,
    '-c:a',
    'aac',
    '-b:a',
    String(AUDIO_BITRATE),
    '-ac',
    '2',
    '-f',
    'hls',
    '-hls_time',
    String(segmentSec),
    '-hls_list_size',
    '0',
    '-hls_playlist_type',
    'vod',
    '-hls_segment_type',
    'mpegts',
    '-hls_segment_filename',
    join(outDir, 'seg-%05d.ts'),
    join(outDir, MEDIA_FILE),
  ];
}

export interface EncodedTitle {
  title: CatalogTitle;
  /** Master, media playlists (rewritten with hls-parser) and segments, ready for upload. */
  objects: SeedObject[];
  cleanup(): Promise<void>;
}

export async function encodeTitle(opts: {
  ffmpeg: string;
  id: string;
  rank: number;
  durationSec: number;
  segmentSec: number;
  ladder: readonly LadderRung[];
  workDir?: string;
  signal?: AbortSignal;
}): Promise<EncodedTitle> {
  const root = await mkdtemp(join(opts.workDir ?? tmpdir(), `ocdn-ffmpeg-${opts.id}-`));
  const cleanup = () => rm(root, { recursive: true, force: true });
  try {
    const objects: SeedObject[] = [];
    const renditions: Array<CatalogRendition & { frameRate: number }> = [];
    let segments: number | undefined;
    for (const rung of opts.ladder) {
      const outDir = join(root, rung.name);
      await mkdir(outDir, { recursive: true });
      const res = await run(opts.ffmpeg, ffmpegArgs({ rung, durationSec: opts.durationSec, segmentSec: opts.segmentSec, outDir }), opts.signal);
      if (res.code !== 0)
        throw new OcdnError(ErrorCodes.INTERNAL, `ffmpeg failed for ${opts.id}/${rung.name}: ${res.stderr.trim().split('\n').pop() ?? `exit ${res.code}`}`);

      // Re-write ffmpeg's playlist with ours so every title has the same tags whatever the ffmpeg version.
      const parsed = parsePlaylist(await readFile(join(outDir, MEDIA_FILE), 'utf8'));
      if (parsed.isMasterPlaylist) throw new OcdnError(ErrorCodes.BAD_PLAYLIST, `ffmpeg wrote a master playlist for ${rung.name}`);
      const durations = parsed.segments.map((s) => s.duration);
      parsed.segments.forEach((s, i) => {
        if (s.uri !== segmentFileName(i))
          throw new OcdnError(ErrorCodes.BAD_PLAYLIST, `unexpected ffmpeg segment name ${s.uri} (wanted ${segmentFileName(i)})`);
      });
      if (segments !== undefined && segments !== durations.length) {
        throw new OcdnError(ErrorCodes.INTERNAL, `ffmpeg cut ${rung.name} into ${durations.length} segments, other renditions into ${segments}`);
      }
      segments = durations.length;

      let peak = 0;
      let totalBytes = 0;
      for (let i = 0; i < durations.length; i++) {
        const file = join(outDir, segmentFileName(i));
        const size = (await stat(file)).size;
        totalBytes += size;
        peak = Math.max(peak, (size * 8) / durations[i]!);
        objects.push({
          key: contentKeys.segment(opts.id, rung.name, i),
          contentType: 'video/mp2t',
          cacheControl: 'public, max-age=31536000, immutable',
          cmsdStatic: segmentCmsdStatic((size * 8) / durations[i]!, durations[i]!, i + 1 < durations.length ? segmentFileName(i + 1) : undefined),
          body: () => readFile(file),
        });
      }
      const mediaText = buildMediaPlaylist(durations);
      objects.push({
        key: contentKeys.media(opts.id, rung.name),
        contentType: PLAYLIST_CONTENT_TYPE,
        cacheControl: 'public, max-age=300',
        cmsdStatic: PLAYLIST_CMSD_STATIC,
        body: () => Buffer.from(mediaText),
      });
      const seconds = durations.reduce((a, b) => a + b, 0);
      renditions.push({
        name: rung.name,
        bandwidth: Math.ceil(peak),
        averageBandwidth: Math.ceil((totalBytes * 8) / seconds),
        width: rung.width,
        height: rung.height,
        codecs: rung.codecs,
        frameRate: rung.frameRate,
      });
    }
    const masterText = buildMasterPlaylist(renditions);
    objects.unshift({
      key: contentKeys.master(opts.id),
      contentType: PLAYLIST_CONTENT_TYPE,
      cacheControl: 'public, max-age=300',
      cmsdStatic: PLAYLIST_CMSD_STATIC,
      body: () => Buffer.from(masterText),
    });
    const title: CatalogTitle = {
      id: opts.id,
      durationSec: opts.durationSec,
      segmentSec: opts.segmentSec,
      segments: segments ?? 0,
      popularityRank: opts.rank,
      renditions: renditions.map(({ frameRate: _f, ...r }) => r),
      mode: 'ffmpeg',
      container: 'ts',
    };
    return { title, objects, cleanup };
  } catch (err) {
    await cleanup();
    throw err;
  }
}

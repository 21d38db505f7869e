import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** Runs a binary (ffmpeg, ffprobe) to completion; rejects with the end of its stderr on a non-zero exit. */
export function run(bin: string, args: string[], opts: { timeoutMs?: number } = {}): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { stdio: ['ignore', 'ignore', 'pipe'], timeout: opts.timeoutMs ?? 60_000 });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', (code, signal) => (code === 0 ? resolve() : reject(new Error(`${bin} exit ${code ?? signal}: ${err.slice(-800)}`))));
  });
}

export type ClipKind = 'fmp4' | 'single-file' | 'aes';

/**
 * A 3 s test pattern as an ffmpeg HLS package in `dir`: `fmp4` (two renditions, EXT-X-MAP),
 * `single-file` (two renditions, one file each, EXT-X-BYTERANGE), `aes` (one rendition of
 * AES-128 TS segments, EXT-X-KEY with a relative URI to a key file in the package).
 */
export async function packageClip(ffmpeg: string, dir: string, kind: ClipKind, masterName: string): Promise<void> {
  const input = [
    ...['-hide_banner', '-loglevel', 'error', '-y'],
    ...['-f', 'lavfi', '-i', 'testsrc2=size=160x90:rate=24:duration=3', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000:duration=3'],
  ];
  const codecs = ['-c:v', 'libx264', '-preset', 'ultrafast', '-g', '24', '-keyint_min', '24', '-sc_threshold', '0'];
  const hls = ['-f', 'hls', '-hls_time', '1', '-hls_playlist_type', 'vod', '-master_pl_name', masterName];
  if (kind === 'aes') {
    // ffmpeg 5 cannot encrypt fMP4: TS segments, the key beside the media playlist.
    const keyFile = join(dir, 'stream_0', 'enc.key');
    await mkdir(join(dir, 'stream_0'), { recursive: true });
    await writeFile(keyFile, randomBytes(16));
    const keyInfo = join(dir, '..', `${kind}-keyinfo`);
    await writeFile(keyInfo, `enc.key\n${keyFile}\n`);
    await run(ffmpeg, [
      ...input,
      ...['-map', '0:v', '-map', '1:a', ...codecs, '-b:v:0', '200k', '-c:a', 'aac', '-b:a', '32k', '-ac', '1'],
      ...hls,
      ...['-hls_key_info_file', keyInfo, '-var_stream_map', 'v:0,a:0'],
      ...['-hls_segment_filename', join(dir, 'stream_%v/seg%03d.ts'), join(dir, 'stream_%v/index.m3u8')],
    ]);
    return;
  }
  const layout = kind === 'fmp4' ? ['-hls_segment_type', 'fmp4', '-hls_fmp4_init_filename', 'init.mp4'] : ['-hls_flags', 'single_file'];
  const segName = kind === 'fmp4' ? 'seg%03d.m4s' : 'data.ts';
  await run(ffmpeg, [
    ...input,
    ...['-filter_complex', '[0:v]split=2[v1][v2];[v2]scale=96:54[v2o]', '-map', '[v1]', '-map', '[v2o]', '-map', '1:a', '-map', '1:a'],
    ...codecs,
    ...['-b:v:0', '200k', '-b:v:1', '100k', '-c:a', 'aac', '-b:a', '32k', '-ac', '1'],
    ...hls,
    ...layout,
    ...['-var_stream_map', 'v:0,a:0 v:1,a:1', '-hls_segment_filename', join(dir, `stream_%v/${segName}`), join(dir, 'stream_%v/index.m3u8')],
  ]);
}

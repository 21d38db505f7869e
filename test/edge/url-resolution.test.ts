import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SteerResponse } from '../../common/contracts.ts';
import { waitFor } from '../../common/http.ts';
import { splitPathToken } from '../../common/token.ts';
import { startEdge, type Edge } from '../../edge/server.ts';
import { findFfmpeg } from '../../origin/ffmpeg.ts';
import { importTitle } from '../../origin/import.ts';
import { OriginReader } from '../../origin/reader.ts';
import { EMBEDDED_CREDENTIALS } from '../../origin/s3-config.ts';
import { createS3Client } from '../../origin/s3-client.ts';
import { startEmbeddedS3, type EmbeddedS3 } from '../../origin/s3-server.ts';
import { seedContent } from '../../origin/seed.ts';
import { startSteering, type Steering } from '../../steering/server.ts';
import { packageClip, run } from '../origin/clips.ts';
import { TEST_EDGE_KEY } from '../steering/helpers.ts';

/**
 * Issue 13: what a standard player does with what steering hands out. Every URI of every
 * playlist is resolved with `new URL(ref, base)` and nothing else (no token copied by hand), and
 * every one must answer 200 (206 for byte ranges) from a real edge with tokens on: the path
 * token has to survive relative resolution from the master down to segments, EXT-X-MAP,
 * EXT-X-KEY and byte-range segments. ffmpeg then plays through the same URLs as an HLS client.
 */
const BUCKET = 'ocdn-media';
const SECRET = 'url-resolution-secret-1';

type Kind = 'playlist' | 'segment' | 'map' | 'key' | 'steering';
interface Fetched {
  url: string;
  kind: Kind;
  status: number;
  range?: string;
  /** Access-Control-Allow-Origin on the answer to a request from a page's origin. */
  acao: string | undefined;
  /** The CMCD header-mode preflight of the same URL: its status and what it allows. */
  preflight: { status: number; allowHeaders: string; allowOrigin: string | undefined };
}

/** A page on its own origin, as hls.js runs: every request carries Origin, CMCD headers need a preflight. */
const PAGE_ORIGIN = 'http://player.example:8080';
const CMCD_HEADERS = 'cmcd-request,cmcd-object,cmcd-status,cmcd-session,range';

async function preflight(url: string, dispatcher: Agent): Promise<Fetched['preflight']> {
  const res = await request(url, {
    dispatcher,
    method: 'OPTIONS',
    headers: { origin: PAGE_ORIGIN, 'access-control-request-method': 'GET', 'access-control-request-headers': CMCD_HEADERS },
  });
  await res.body.dump();
  const h = (n: string) => (res.headers[n] === undefined ? undefined : String(res.headers[n]));
  return { status: res.statusCode, allowHeaders: (h('access-control-allow-headers') ?? '').toLowerCase(), allowOrigin: h('access-control-allow-origin') };
}
const acaoOf = (h: Record<string, string | string[] | undefined>) =>
  h['access-control-allow-origin'] === undefined ? undefined : String(h['access-control-allow-origin']);

const quoted = (line: string, name: string) => new RegExp(`(?:^|[:,])${name}="([^"]*)"`).exec(line)?.[1];

/** EXT-X-BYTERANGE / BYTERANGE="n@o" → a Range header, the offset defaulting to where the last range of that URL ended. */
function rangeOf(spec: string, url: string, ends: Map<string, number>): string {
  const [len, off] = spec.split('@');
  const start = off !== undefined ? Number(off) : (ends.get(url) ?? 0);
  const end = start + Number(len) - 1;
  ends.set(url, end + 1);
  return `bytes=${start}-${end}`;
}

/**
 * Fetches a playlist and, depth first, everything it references, exactly as a player resolves
 * them. Returns every request made with its answer; throws nothing on a bad status (the test
 * asserts on the list, so a failure names the URL).
 */
async function crawl(url: string, dispatcher: Agent, seen = new Set<string>(), out: Fetched[] = []): Promise<Fetched[]> {
  const res = await request(url, { dispatcher, headers: { origin: PAGE_ORIGIN } });
  const text = await res.body.text();
  out.push({ url, kind: 'playlist', status: res.statusCode, acao: acaoOf(res.headers), preflight: await preflight(url, dispatcher) });
  if (res.statusCode !== 200) return out;
  const refs: { url: string; kind: Kind; range?: string }[] = [];
  const ends = new Map<string, number>();
  let nextIsPlaylist = false;
  let pendingRange: string | undefined;
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (line === '') continue;
    if (line.startsWith('#')) {
      if (line.startsWith('#EXT-X-STREAM-INF:')) nextIsPlaylist = true;
      else if (line.startsWith('#EXT-X-BYTERANGE:')) pendingRange = line.slice('#EXT-X-BYTERANGE:'.length);
      const uri = quoted(line, 'URI') ?? quoted(line, 'SERVER-URI');
      if (uri === undefined) continue;
      const abs = new URL(uri, url).toString();
      if (line.startsWith('#EXT-X-MAP:')) {
        const br = quoted(line, 'BYTERANGE');
        refs.push({ url: abs, kind: 'map', ...(br ? { range: rangeOf(br, abs, new Map()) } : {}) });
      } else if (line.startsWith('#EXT-X-KEY:') || line.startsWith('#EXT-X-SESSION-KEY:')) refs.push({ url: abs, kind: 'key' });
      else if (line.startsWith('#EXT-X-CONTENT-STEERING:')) refs.push({ url: abs, kind: 'steering' });
      else refs.push({ url: abs, kind: 'playlist' }); // EXT-X-MEDIA, EXT-X-I-FRAME-STREAM-INF
      continue;
    }
    const abs = new URL(line, url).toString();
    if (nextIsPlaylist) refs.push({ url: abs, kind: 'playlist' });
    else refs.push({ url: abs, kind: 'segment', ...(pendingRange ? { range: rangeOf(pendingRange, abs, ends) } : {}) });
    nextIsPlaylist = false;
    pendingRange = undefined;
  }
  for (const r of refs) {
    const key = `${r.url}|${r.range ?? ''}`;
    if (seen.has(key)) continue;
    seen.add(key);
    if (r.kind === 'playlist') {
      await crawl(r.url, dispatcher, seen, out);
      continue;
    }
    const got = await request(r.url, { dispatcher, headers: { origin: PAGE_ORIGIN, ...(r.range ? { range: r.range } : {}) } });
    await got.body.dump();
    out.push({
      url: r.url,
      kind: r.kind,
      status: got.statusCode,
      ...(r.range ? { range: r.range } : {}),
      acao: acaoOf(got.headers),
      preflight: await preflight(r.url, dispatcher),
    });
  }
  return out;
}

function expectAllServed(list: Fetched[]): void {
  const bad = list.filter((f) => f.status !== (f.range ? 206 : 200));
  expect(bad, JSON.stringify(bad.slice(0, 5))).toEqual([]);
  // Readable by a page on another origin, and CMCD in header mode passes its preflight.
  const noCors = list.filter((f) => f.acao !== '*');
  expect(noCors, JSON.stringify(noCors.slice(0, 5))).toEqual([]);
  const refused = list.filter(
    (f) => f.preflight.status !== 204 || f.preflight.allowOrigin !== '*' || !CMCD_HEADERS.split(',').every((h) => f.preflight.allowHeaders.includes(h)),
  );
  expect(refused, JSON.stringify(refused.slice(0, 5))).toEqual([]);
}

describe('standard URL resolution through steering and real edges (tokens on)', () => {
  let dir: string;
  let s3: EmbeddedS3;
  let client: S3Client;
  let st: Steering;
  const edges: Edge[] = [];
  let ffmpeg: string;
  const dispatcher = new Agent({ connections: 8 });

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ocdn-urlres-'));
    s3 = await startEmbeddedS3({ dir: join(dir, 's3'), port: 0, bucket: BUCKET });
    client = createS3Client({ s3Endpoint: s3.endpoint, s3Region: 'us-east-1', forcePathStyle: true, ...EMBEDDED_CREDENTIALS }, { maxAttempts: 1 });
    const reader = new OriginReader({ client, bucket: BUCKET, timeoutMs: 5_000, retries: 1, baseBackoffMs: 10 });
    await seedContent({ client, bucket: BUCKET, titles: 1, durationSec: 8, segmentSec: 4, ladder: 'small', concurrency: 4 });
    ffmpeg = await findFfmpeg();
    const clips = [
      { id: 'clip-fmp4', kind: 'fmp4', master: 'master.m3u8' },
      { id: 'clip-range', kind: 'single-file', master: 'main.m3u8' },
      { id: 'clip-aes', kind: 'aes', master: 'master.m3u8' },
    ] as const;
    await Promise.all(clips.map((c) => packageClip(ffmpeg, join(dir, c.id), c.kind, c.master)));
    for (const c of clips) await importTitle({ client, bucket: BUCKET, title: c.id, fromDir: join(dir, c.id), master: c.master });

    st = await startSteering({
      edgeKey: TEST_EDGE_KEY,
      port: 0,
      tokenSecret: SECRET,
      tokenTtlSec: 600,
      origin: reader,
      registry: { heartbeatIntervalMs: 200, missedHeartbeats: 5, probeIntervalMs: 200, probeTimeoutMs: 1_000, rise: 1, fall: 3 },
    });
    await st.catalog.refresh();
    for (const id of ['edge-a', 'edge-b']) {
      edges.push(
        await startEdge({
          edgeKey: TEST_EDGE_KEY,
          id,
          port: 0,
          region: 'us-east',
          capacityBytes: 64_000_000,
          origin: reader,
          steeringUrl: st.url,
          tokenSecret: SECRET,
          heartbeatIntervalMs: 100,
        }),
      );
    }
    await waitFor(() => st.registry.counts().up === 2, { timeoutMs: 15_000, what: 'both edges up' });
  }, 90_000);

  afterAll(async () => {
    await Promise.all(edges.map((e) => e.close()));
    await st?.close();
    await dispatcher.close();
    client?.destroy();
    await s3?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const steer = async (title: string): Promise<SteerResponse> => {
    const r = await request(`${st.url}/v1/steer?title=${title}`, { dispatcher });
    const text = await r.body.text();
    expect(r.statusCode, text).toBe(200);
    return JSON.parse(text) as SteerResponse;
  };

  it('every URI under a /v1/steer URL resolves (new URL(ref, base)) to a 200/206: playlists, segments, EXT-X-MAP, EXT-X-KEY, byte ranges', async () => {
    const kinds = new Map<string, Set<string>>();
    for (const title of ['title-0001', 'clip-fmp4', 'clip-range', 'clip-aes']) {
      const ans = await steer(title);
      expect(ans.edges).toHaveLength(2);
      for (const e of ans.edges) {
        const u = new URL(e.url);
        // The token rides in the path; nothing in the query for resolution to drop.
        expect(u.search).toBe('');
        expect(splitPathToken(u.pathname)).toMatchObject({ ok: true, path: `/vod/${title}/master.m3u8` });
        const list = await crawl(e.url, dispatcher);
        expectAllServed(list);
        const k = kinds.get(title) ?? new Set();
        for (const f of list) k.add(f.range ? `${f.kind}+range` : f.kind);
        kinds.set(title, k);
        // Every request went to the edge the steer answer named.
        for (const f of list) expect(new URL(f.url).host).toBe(u.host);
      }
    }
    // The query form (still accepted) is why: resolution drops the query, so past the master every request is refused.
    const ans = await steer('clip-fmp4');
    const u = new URL(ans.edges[0]!.url);
    const split = splitPathToken(u.pathname);
    const legacy = await crawl(`${u.origin}${split.ok ? split.path : ''}?token=${split.ok ? split.token : ''}`, dispatcher);
    expect(legacy[0]!.status).toBe(200);
    expect(legacy.length).toBeGreaterThan(1);
    expect(legacy.slice(1).every((f) => f.status === 403)).toBe(true);

    expect([...kinds.get('clip-fmp4')!].sort()).toEqual(['map', 'playlist', 'segment']);
    expect([...kinds.get('clip-range')!].sort()).toEqual(['playlist', 'segment+range']);
    expect([...kinds.get('clip-aes')!].sort()).toEqual(['key', 'playlist', 'segment']);
    expect([...kinds.get('title-0001')!].sort()).toEqual(['playlist', 'segment']);
  });

  it('every URI of a Content Steering master (each pathway) resolves to a 200/206, and so does its SERVER-URI', async () => {
    for (const title of ['clip-fmp4', 'clip-range', 'clip-aes']) {
      const list = await crawl(`${st.url}/v1/play/${title}/master.m3u8`, dispatcher);
      expectAllServed(list);
      // Both pathways were walked: requests reached both edges' hosts.
      const hosts = new Set(list.filter((f) => f.kind !== 'steering' && !f.url.startsWith(st.url)).map((f) => new URL(f.url).host));
      expect([...hosts].sort()).toEqual(edges.map((e) => new URL(e.url).host).sort());
      expect(list.some((f) => f.kind === 'steering')).toBe(true);
      if (title === 'clip-fmp4') expect(list.some((f) => f.kind === 'map')).toBe(true);
      if (title === 'clip-range') expect(list.some((f) => f.range !== undefined)).toBe(true);
      if (title === 'clip-aes') expect(list.some((f) => f.kind === 'key')).toBe(true);
    }
  });

  it('ffmpeg plays the fMP4, byte-range and AES titles as an HLS client from the /v1/steer URL (exit 0)', async () => {
    for (const title of ['clip-fmp4', 'clip-range', 'clip-aes']) {
      const url = (await steer(title)).edges[0]!.url;
      await run(ffmpeg, ['-hide_banner', '-nostdin', '-v', 'error', '-xerror', '-i', url, '-t', '4', '-f', 'null', '-'], { timeoutMs: 30_000 });
    }
  }, 90_000);
});

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import * as HLS from 'hls-parser';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SteerResponse } from '../../common/contracts.ts';
import { waitFor } from '../../common/http.ts';
import { signPath, splitPathToken, withPathToken, withToken } from '../../common/token.ts';
import { startEdge, type Edge } from '../../edge/server.ts';
import { OriginReader } from '../../origin/reader.ts';
import { EMBEDDED_CREDENTIALS } from '../../origin/s3-config.ts';
import { createS3Client } from '../../origin/s3-client.ts';
import { startEmbeddedS3, type EmbeddedS3 } from '../../origin/s3-server.ts';
import { seedContent } from '../../origin/seed.ts';
import { readSteeringTags, type SteeringManifest } from '../../steering/content-steering.ts';
import { startSteering, type Steering } from '../../steering/server.ts';
import { TEST_EDGE_KEY } from './helpers.ts';

/**
 * Steering with real edges (edge/server.ts) in front of the embedded S3, seeded by the origin
 * packager. Heartbeats and probes run every 100 ms so health changes show within a second or two.
 */
const SECRET = 'integration-secret-1';
const BUCKET = 'ocdn-media';
const HB_MS = 100;

async function get(url: string): Promise<{ status: number; text: string; headers: Record<string, string | string[] | undefined> }> {
  const res = await request(url, { headersTimeout: 10_000, bodyTimeout: 10_000 });
  return { status: res.statusCode, text: await res.body.text(), headers: res.headers };
}

async function steer(st: Steering, title: string, region?: string): Promise<SteerResponse> {
  const r = await get(`${st.url}/v1/steer?title=${title}${region ? `&region=${region}` : ''}`);
  if (r.status !== 200) throw new Error(`steer answered ${r.status}: ${r.text}`);
  return JSON.parse(r.text) as SteerResponse;
}

describe('steering with real edges', () => {
  let dir: string;
  let s3: EmbeddedS3;
  let client: S3Client;
  let reader: OriginReader;
  let st: Steering;
  const edges = new Map<string, Edge>();

  const startOne = (id: string, region: string) =>
    startEdge({
      edgeKey: TEST_EDGE_KEY,
      id,
      port: 0,
      region,
      capacityBytes: 64_000_000,
      origin: reader,
      steeringUrl: st.url,
      tokenSecret: SECRET,
      heartbeatIntervalMs: HB_MS,
    }).then((e) => {
      edges.set(id, e);
      return e;
    });

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ocdn-steering-'));
    s3 = await startEmbeddedS3({ dir, port: 0, bucket: BUCKET });
    client = createS3Client({ s3Endpoint: s3.endpoint, s3Region: 'us-east-1', forcePathStyle: true, ...EMBEDDED_CREDENTIALS }, { maxAttempts: 1 });
    await seedContent({ client, bucket: BUCKET, endpoint: s3.endpoint, titles: 3, durationSec: 8, segmentSec: 4, ladder: 'small', concurrency: 4 });
    reader = new OriginReader({ client, bucket: BUCKET, timeoutMs: 3_000, retries: 1, baseBackoffMs: 10 });
    st = await startSteering({
      edgeKey: TEST_EDGE_KEY,
      port: 0,
      tokenSecret: SECRET,
      tokenTtlSec: 600,
      origin: reader,
      // Edges beat every 100 ms but steering allows 3 × 250 ms of silence, and probes get 1 s:
      // a busy 2-core machine running other test files must not fake an outage.
      registry: { heartbeatIntervalMs: 250, missedHeartbeats: 3, probeIntervalMs: HB_MS, probeTimeoutMs: 1_000, rise: 2, fall: 3 },
    });
    await Promise.all([startOne('east-1', 'us-east'), startOne('east-2', 'us-east'), startOne('west-1', 'us-west')]);
    await waitFor(() => st.registry.counts().up === 3, { timeoutMs: 15_000, what: '3 edges registered' });
  });

  afterAll(async () => {
    await Promise.all([...edges.values()].map((e) => e.close()));
    await st?.close();
    client?.destroy();
    await s3?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('loaded the titles from the bucket catalog', async () => {
    expect(st.catalog.ids().sort()).toEqual(['title-0001', 'title-0002', 'title-0003']);
    expect((await get(`${st.url}/v1/steer?title=title-0042`)).status).toBe(404);
  });

  it('steer → the signed URL of the first edge plays (master, media playlist, segment)', async () => {
    const ans = await steer(st, 'title-0001', 'us-east');
    expect(ans.edges.map((e) => e.region)).toEqual(['us-east', 'us-east', 'us-west']);
    const first = ans.edges[0]!;
    const master = await get(first.url);
    expect(master.status).toBe(200);
    expect(master.headers['x-edge-id']).toBe(first.id);
    const parsed = HLS.parse(master.text) as HLS.types.MasterPlaylist;
    expect(parsed.variants.length).toBe(3);
    // The token is in the path: plain relative resolution carries it to the rest of the title.
    const mediaUrl = new URL(parsed.variants[0]!.uri, first.url).toString();
    const media = await get(mediaUrl);
    expect(media.status).toBe(200);
    const seg = (HLS.parse(media.text) as HLS.types.MediaPlaylist).segments[0]!;
    const segment = await get(new URL(seg.uri, mediaUrl).toString());
    expect(segment.status).toBe(200);
  });

  it('a tampered, expired or missing token is refused with 403', async () => {
    const ans = await steer(st, 'title-0002', 'us-east');
    const url = new URL(ans.edges[0]!.url);
    const split = splitPathToken(url.pathname);
    if (!split.ok || split.token === undefined) throw new Error(`steering gave no path token: ${url.pathname}`);
    const { token, path } = split;
    const flipped = token.slice(0, -1) + (token.endsWith('0') ? '1' : '0');
    const tampered = await get(withPathToken(url.origin, path, flipped));
    expect(tampered.status).toBe(403);
    expect(tampered.text).toMatch(/invalid token signature/);
    // A valid token of another title does not open this one.
    const otherUrl = new URL((await steer(st, 'title-0003', 'us-east')).edges[0]!.url);
    const other = splitPathToken(otherUrl.pathname);
    expect(other.ok && other.token).toBeTruthy();
    expect((await get(withPathToken(url.origin, path, other.ok ? other.token : undefined))).status).toBe(403);
    const expired = signPath(SECRET, path, Math.floor(Date.now() / 1000) - 5);
    const r = await get(withPathToken(url.origin, path, expired));
    expect(r.status).toBe(403);
    expect(r.text).toMatch(/expired/);
    expect((await get(`${url.origin}${path}`)).status).toBe(403);
    // The query form is still accepted, and refused the same way.
    expect((await get(withToken(`${url.origin}${path}`, token))).status).toBe(200);
    expect((await get(withToken(`${url.origin}${path}`, flipped))).status).toBe(403);
  });

  it('an edge that stops leaves the answers within the health window and returns after restart', async () => {
    const title = 'title-0003';
    const victimId = (await steer(st, title, 'us-east')).edges[0]!.id;
    await edges.get(victimId)!.close();
    edges.delete(victimId);
    await waitFor(async () => !(await steer(st, title, 'us-east')).edges.some((e) => e.id === victimId), {
      timeoutMs: 5_000,
      intervalMs: 20,
      what: `${victimId} out of the answers`,
    });
    const without = await steer(st, title, 'us-east');
    expect(without.edges[0]!.region).toBe('us-east');
    expect((await get(without.edges[0]!.url)).status).toBe(200);

    // Restart under the same id (another port): back after `rise` good probes.
    const again = await startOne(victimId, 'us-east');
    // (The answer that shows it is the one checked: every steer adds load to the first edge
    // until its next heartbeat, so a burst of polls may itself move the title for a moment.)
    const back = await waitFor(
      async () => {
        const a = await steer(st, title, 'us-east');
        return a.edges[0]!.id === victimId ? a : undefined;
      },
      { timeoutMs: 10_000, intervalMs: 20, what: `${victimId} back first for ${title}` },
    );
    expect(new URL(back.edges[0]!.url).port).toBe(String(again.port));
    expect((await get(back.edges[0]!.url)).status).toBe(200);
  });

  it('an edge steering cannot reach is out after failed probes, though it still heartbeats', async () => {
    const edge = edges.get('west-1')!;
    const port = edge.port;
    // Stop the listener only: the edge process keeps running and sending heartbeats.
    await new Promise<void>((resolve) => {
      edge.server.close(() => resolve());
      edge.server.closeAllConnections();
    });
    await waitFor(() => st.registry.status('west-1')?.state === 'down', { timeoutMs: 5_000, intervalMs: 20, what: 'west-1 out by probes' });
    expect(st.registry.status('west-1')!.reason).toMatch(/failed probes/);
    expect((await steer(st, 'title-0001', 'us-west')).edges.map((e) => e.id)).not.toContain('west-1');
    await new Promise<void>((resolve) => edge.server.listen(port, '127.0.0.1', resolve));
    await waitFor(() => st.registry.status('west-1')?.state === 'up', { timeoutMs: 5_000, intervalMs: 20, what: 'west-1 back' });
    expect((await steer(st, 'title-0001', 'us-west')).edges[0]!.id).toBe('west-1');
  });

  it('the Content Steering master parses, has every variant once per pathway, and its manifest follows health', async () => {
    const r = await get(`${st.url}/v1/play/title-0001/master.m3u8?region=us-east`);
    expect(r.status).toBe(200);
    const master = HLS.parse(r.text) as HLS.types.MasterPlaylist;
    const tags = readSteeringTags(r.text);
    const pathways = [...new Set(tags.variantPathways)];
    expect(pathways.sort()).toEqual(['east-1', 'east-2', 'west-1']);
    expect(master.variants.length).toBe(3 * 3);
    expect(r.text).toMatch(
      /^#EXT-X-CONTENT-STEERING:SERVER-URI="http:\/\/127\.0\.0\.1:\d+\/v1\/steering\/[A-Za-z0-9_-]+\.json",PATHWAY-ID="(east-1|east-2)"$/m,
    );
    // Every variant URI is absolute, on its pathway's edge, and plays as is; its token names the
    // session of the steering manifest, so the edges' access records carry it for any player.
    const session = /\/v1\/steering\/([A-Za-z0-9_-]+)\.json"/.exec(r.text)![1]!;
    for (const [i, v] of master.variants.entries()) {
      const edge = edges.get(tags.variantPathways[i]!)!;
      expect(v.uri).toMatch(new RegExp(`^${edge.url}/t/\\d+\\.${session}\\.[0-9a-f]{64}/vod/title-0001/`));
    }
    expect((await get(master.variants[0]!.uri)).status).toBe(200);

    const manifest = JSON.parse((await get(tags.serverUri!)).text) as SteeringManifest;
    expect(Object.keys(manifest).sort()).toEqual(['PATHWAY-PRIORITY', 'RELOAD-URI', 'TTL', 'VERSION']);
    expect(manifest.VERSION).toBe(1);
    expect(manifest.TTL).toBeGreaterThan(0);
    expect(manifest['RELOAD-URI']).toBe(tags.serverUri);
    expect(manifest['PATHWAY-PRIORITY'][0]).toBe(tags.pathwayId);
    expect([...manifest['PATHWAY-PRIORITY']].sort()).toEqual(['east-1', 'east-2', 'west-1']);

    // The first pathway's edge stops: the next reload no longer lists it.
    const gone = tags.pathwayId!;
    await edges.get(gone)!.close();
    edges.delete(gone);
    await waitFor(
      async () => {
        const m = JSON.parse((await get(`${manifest['RELOAD-URI']}?_HLS_pathway=${gone}&_HLS_throughput=8000000`)).text) as SteeringManifest;
        return !m['PATHWAY-PRIORITY'].includes(gone) && m['PATHWAY-PRIORITY'].length === 2;
      },
      { timeoutMs: 5_000, intervalMs: 20, what: `${gone} out of PATHWAY-PRIORITY` },
    );
  });

  it('a title added to the bucket is steered once the catalog is re-read (404 before)', async () => {
    const quick = await startSteering({
      edgeKey: TEST_EDGE_KEY,
      port: 0,
      tokenSecret: SECRET,
      origin: reader,
      catalogRefreshMs: 200,
      registry: { heartbeatIntervalMs: 60_000, probeIntervalMs: 0, rise: 1 },
    });
    try {
      const [id, edge] = [...edges.entries()][0]!;
      quick.registry.heartbeat({
        id,
        url: edge.url,
        region: 'us-east',
        capacityBytes: 1,
        usedBytes: 0,
        inFlight: 0,
        rps: 0,
        egressBps: 0,
        healthy: true,
        titles: [],
        ts: Date.now(),
      });
      await waitFor(() => quick.catalog.size === 3, { timeoutMs: 10_000, what: 'the catalog loaded' });
      expect((await get(`${quick.url}/v1/steer?title=title-0004`)).status).toBe(404);
      await seedContent({
        client,
        bucket: BUCKET,
        endpoint: s3.endpoint,
        titles: 1,
        firstTitle: 4,
        durationSec: 8,
        segmentSec: 4,
        ladder: 'small',
        concurrency: 4,
      });
      await waitFor(async () => (await get(`${quick.url}/v1/steer?title=title-0004`)).status === 200, {
        timeoutMs: 10_000,
        intervalMs: 100,
        what: 'title-0004 steered after the refresh',
      });
    } finally {
      await quick.close();
    }
  });
});

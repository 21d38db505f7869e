import * as HLS from 'hls-parser';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../common/http.ts';
import { startEdge, type Edge, type EdgeOptions } from '../../edge/server.ts';
import { seedContent } from '../../origin/seed.ts';
import type { PathwayClone, SteeringManifest } from '../../steering/content-steering.ts';
import { readSteeringTags } from '../../steering/content-steering.ts';
import { startSteering, type Steering } from '../../steering/server.ts';
import { startOrigin, type TestOrigin, BUCKET } from '../edge/helpers.ts';
import { expectErrorBody } from '../error-body.ts';
import { TEST_EDGE_KEY } from './helpers.ts';

/**
 * HLS Content Steering by the spec (RFC 8216bis §7; hls.js content-steering-controller as the
 * client reference), against real steering, real edges and the embedded S3: 410 for an ended
 * session, PATHWAY-CLONES for an edge that arrives after the session began (its URIs, replaced
 * as the client replaces them, play from that edge), and a TTL that follows the registry.
 */
const SECRET = 'steering-spec-secret-1';
const STABLE_TTL = 3;
const SHORT_TTL = 1;

interface Res {
  status: number;
  text: string;
  headers: Record<string, string | string[] | undefined>;
}

describe('Content Steering by the spec', () => {
  let origin: TestOrigin;
  let st: Steering;
  let shortLived: Steering;
  const edges = new Map<string, Edge>();
  const dispatcher = new Agent({ connections: 8 });
  const get = async (url: string): Promise<Res> => {
    const r = await request(url, { dispatcher });
    return { status: r.statusCode, text: await r.body.text(), headers: r.headers };
  };
  const manifestOf = async (url: string): Promise<SteeringManifest> => {
    const r = await get(url);
    expect(r.status, r.text).toBe(200);
    return JSON.parse(r.text) as SteeringManifest;
  };
  // Beats every 100 ms, but an edge only counts as out after 2 s of silence or 3 failed probes: a
  // loaded 2-core machine can pause a process for longer than a few beats, and the test that
  // takes an edge out closes it, which its probes see at once.
  const registry = { heartbeatIntervalMs: 100, missedHeartbeats: 20, probeIntervalMs: 100, probeTimeoutMs: 2_000, rise: 1, fall: 3 };
  const edge = async (id: string, over: Partial<EdgeOptions> = {}) => {
    const e = await startEdge({
      edgeKey: TEST_EDGE_KEY,
      id,
      port: 0,
      region: 'us-east',
      capacityBytes: 32_000_000,
      origin: origin.reader,
      steeringUrl: [st.url, shortLived.url],
      tokenSecret: SECRET,
      heartbeatIntervalMs: 100,
      ...over,
    });
    edges.set(id, e);
    return e;
  };
  const upIn = (s: Steering, ids: string[]) => () => ids.every((id) => s.registry.status(id)?.state === 'up');

  beforeAll(async () => {
    origin = await startOrigin();
    await seedContent({ client: origin.client, bucket: BUCKET, titles: 1, durationSec: 8, segmentSec: 4, ladder: 'small', concurrency: 4 });
    const common = { edgeKey: TEST_EDGE_KEY, port: 0, tokenSecret: SECRET, origin: origin.reader, registry } as const;
    st = await startSteering({ ...common, tokenTtlSec: 600, manifestTtlSec: STABLE_TTL, manifestShortTtlSec: SHORT_TTL });
    // Sessions live as long as their tokens: 2 s here, so one ends within the test.
    shortLived = await startSteering({ ...common, tokenTtlSec: 2 });
    await Promise.all([st.catalog.refresh(), shortLived.catalog.refresh()]);
    await edge('edge-a');
    await edge('edge-b');
    await waitFor(() => upIn(st, ['edge-a', 'edge-b'])() && upIn(shortLived, ['edge-a', 'edge-b'])(), { timeoutMs: 10_000, what: 'edges up' });
  }, 30_000);

  afterAll(async () => {
    await Promise.all([...edges.values()].map((e) => e.close()));
    await Promise.all([st?.close(), shortLived?.close()]);
    await dispatcher.close();
    await origin?.close();
  });

  async function session(s: Steering): Promise<{ master: HLS.types.MasterPlaylist; text: string; serverUri: string; pathways: string[] }> {
    const r = await get(`${s.url}/v1/play/title-0001/master.m3u8`);
    expect(r.status, r.text).toBe(200);
    const tags = readSteeringTags(r.text);
    return {
      master: HLS.parse(r.text) as HLS.types.MasterPlaylist,
      text: r.text,
      serverUri: tags.serverUri!,
      pathways: [...new Set(tags.variantPathways)],
    };
  }

  it('answers 410 Gone with the common error body once a session has ended (hls.js stops reloading only on 410)', async () => {
    const { serverUri } = await session(shortLived);
    expect((await get(serverUri)).status).toBe(200);
    let last: Res | undefined;
    await waitFor(
      async () => {
        last = await get(`${serverUri}?_HLS_pathway=edge-a&_HLS_throughput=3000000`);
        return last.status !== 200;
      },
      { timeoutMs: 10_000, intervalMs: 100, what: 'the session to end' },
    );
    expect(last!.status).toBe(410);
    expectErrorBody(last!.text, 'E_GONE', /has ended or expired/);
  });

  it('clones an edge admitted after the session began (PATHWAY-CLONES + PATHWAY-PRIORITY); its replaced URIs play from that edge', async () => {
    const s = await session(st);
    expect(s.pathways.sort()).toEqual(['edge-a', 'edge-b']);
    // Every variant carries a STABLE-VARIANT-ID, the same on each pathway: PER-VARIANT-URIS keys.
    const ids = s.text.match(/STABLE-VARIANT-ID="([^"]+)"/g) ?? [];
    expect(ids).toHaveLength(s.master.variants.length);
    expect((await manifestOf(s.serverUri))['PATHWAY-CLONES']).toBeUndefined();

    // The new edge listens on another loopback address and on edge-a's port, so the HOST rule
    // alone (the URI's host component, as hls.js sets url.hostname) moves edge-a's URIs to it.
    const a = edges.get('edge-a')!;
    const c = await edge('edge-c', { host: '127.0.0.2', port: a.port });
    expect(c.url).toBe(`http://127.0.0.2:${a.port}`);
    await waitFor(upIn(st, ['edge-a', 'edge-b', 'edge-c']), { timeoutMs: 10_000, what: 'edge-c up beside edge-a and edge-b' });

    const m = await manifestOf(`${s.serverUri}?_HLS_pathway=${s.pathways[0]}&_HLS_throughput=5000000`);
    expect(m['PATHWAY-CLONES']).toHaveLength(1);
    const clone = m['PATHWAY-CLONES']![0]! as PathwayClone;
    expect(clone.ID).toBe('edge-c');
    expect(clone['BASE-ID']).toBe('edge-a'); // the session pathway on the same port
    expect(m['PATHWAY-PRIORITY']).toContain('edge-c');
    expect([...m['PATHWAY-PRIORITY']].sort()).toEqual(['edge-a', 'edge-b', 'edge-c']);
    expect(clone['URI-REPLACEMENT'].HOST).toBe('127.0.0.2');
    // The registry just changed: the short TTL.
    expect(m.TTL).toBe(SHORT_TTL);

    // Apply the clone as the client does (hls.js performUriReplacement): the per-variant URI
    // when there is one for the variant's STABLE-VARIANT-ID, else the base URI with HOST.
    const variantPathways = readSteeringTags(s.text).variantPathways;
    const base = s.master.variants.filter((_, i) => variantPathways[i] === 'edge-a');
    expect(base.length).toBeGreaterThan(0);
    const perVariant = clone['URI-REPLACEMENT']['PER-VARIANT-URIS'] ?? {};
    for (const v of base) {
      const byHost = new URL(v.uri);
      byHost.hostname = clone['URI-REPLACEMENT'].HOST!;
      const byId = perVariant[v.stableVariantId];
      expect(byId, v.stableVariantId).toBeDefined();
      expect(byId).toBe(byHost.toString());
      for (const url of [byId!, byHost.toString()]) {
        const media = await get(url);
        expect(media.status, url).toBe(200);
        expect(media.headers['x-edge-id']).toBe('edge-c');
        // Relative resolution from the cloned URI keeps the path token down to the segments.
        const seg = (HLS.parse(media.text) as HLS.types.MediaPlaylist).segments[0]!;
        const segment = await get(new URL(seg.uri, url).toString());
        expect(segment.status).toBe(200);
        expect(segment.headers['x-edge-id']).toBe('edge-c');
      }
    }

    // A session that starts now has edge-c as a pathway of its own: nothing to clone.
    const later = await session(st);
    expect(later.pathways).toContain('edge-c');
    expect((await manifestOf(later.serverUri))['PATHWAY-CLONES']).toBeUndefined();
  });

  it('gives the long TTL once the registry is steady and the short one as soon as an edge goes out', async () => {
    const s = await session(st);
    const reload = () => manifestOf(`${s.serverUri}?_HLS_pathway=edge-a&_HLS_throughput=5000000`);
    let m: SteeringManifest | undefined;
    await waitFor(async () => (m = await reload()).TTL === STABLE_TTL, { timeoutMs: 10_000, intervalMs: 100, what: 'a steady registry' });
    expect(m!['RELOAD-URI']).toBe(s.serverUri);

    await edges.get('edge-b')!.close();
    edges.delete('edge-b');
    await waitFor(async () => !(m = await reload())['PATHWAY-PRIORITY'].includes('edge-b'), { timeoutMs: 10_000, intervalMs: 50, what: 'edge-b out' });
    expect(m!.TTL).toBe(SHORT_TTL);
  });
});

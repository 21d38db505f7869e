import type { Catalog, CatalogTitle, EdgeHeartbeat } from '../../common/contracts.ts';
import { deriveEdgeKey, signHeartbeat } from '../../common/edge-key.ts';
import { type Steering, startSteering } from '../../steering/server.ts';
import { startOrigin, type TestOrigin } from '../edge/helpers.ts';

/** A catalog entry with the small ladder's three renditions (what steering needs of a title). */
export function testTitle(id: string, rank = 1): CatalogTitle {
  return {
    id,
    durationSec: 8,
    segmentSec: 4,
    segments: 2,
    popularityRank: rank,
    renditions: [
      { name: '365k', bandwidth: 400_000, averageBandwidth: 365_000, width: 640, height: 360, codecs: 'avc1.64001e,mp4a.40.2' },
      { name: '1100k', bandwidth: 1_200_000, averageBandwidth: 1_100_000, width: 768, height: 432, codecs: 'avc1.64001e,mp4a.40.2' },
      { name: '3000k', bandwidth: 3_300_000, averageBandwidth: 3_000_000, width: 1280, height: 720, codecs: 'avc1.64001f,mp4a.40.2' },
    ],
    mode: 'synthetic',
    container: 'ts',
  };
}

export function testCatalog(n: number): Catalog {
  return {
    version: 1,
    generatedAt: new Date(0).toISOString(),
    ladder: 'small',
    titles: Array.from({ length: n }, (_, i) => testTitle(`title-${String(i + 1).padStart(4, '0')}`, i + 1)),
  };
}

export function heartbeat(over: Partial<EdgeHeartbeat> & { id: string; url: string }): EdgeHeartbeat {
  return { region: 'us-east', capacityBytes: 1e9, usedBytes: 0, inFlight: 0, rps: 0, egressBps: 0, healthy: true, titles: [], ts: Date.now(), ...over };
}

/** The edge key tests start steering and edges with (at least MIN_EDGE_KEY_LENGTH characters). */
export const TEST_EDGE_KEY = 'test-edge-key-0123456789abcdef';

/**
 * The headers that sign `body` as edge `id` (default: the body's own id) with a key derived
 * from `key`, as an edge signs its heartbeats.
 */
export function signedHeaders(body: string, id?: string, key = TEST_EDGE_KEY, now = Date.now()): Record<string, string> {
  let who = id;
  if (who === undefined) {
    try {
      who = String((JSON.parse(body) as { id?: unknown }).id ?? 'unknown');
    } catch {
      who = 'unknown';
    }
  }
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(who)) who = 'unknown';
  return signHeartbeat(deriveEdgeKey(key, who), who, body, now);
}

/** Steering that reads its catalog from a real (s3rver) bucket, empty until the test puts catalog.json. */
export async function steeringOnBucket(catalogRefreshMs: number): Promise<{ origin: TestOrigin; st: Steering }> {
  const origin = await startOrigin();
  const st = await startSteering({
    edgeKey: TEST_EDGE_KEY,
    port: 0,
    tokenSecret: null,
    origin: origin.reader,
    catalogRefreshMs,
    registry: { probeIntervalMs: 0, rise: 1 },
  });
  return { origin, st };
}

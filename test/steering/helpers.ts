import type { Catalog, CatalogTitle, EdgeHeartbeat } from '../../common/contracts.ts';

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

/**
 * Wire contracts between parts (DESIGN.md §2), in one place so edge, steering, player-sim and
 * the cluster scripts agree by construction. Runtime validation lives with the receiver.
 */

/** POST /v1/edges/heartbeat, sent by every edge once a second. */
export interface EdgeHeartbeat {
  id: string;
  /** Base URL players use, e.g. http://127.0.0.1:8401 (no trailing slash). */
  url: string;
  region: string;
  capacityBytes: number;
  usedBytes: number;
  inFlight: number;
  /** Requests per second over the last interval. */
  rps: number;
  /** Egress bits per second over the last interval. */
  egressBps: number;
  healthy: boolean;
  /** Titles with at least one object in cache (compact inventory). */
  titles: string[];
  /** Edge's own clock, ms since epoch. */
  ts: number;
  /** Optional: parent/shield URL, when this edge is a child tier. */
  parent?: string;
}

/** One ranked edge in a steering answer; `url` is the signed master playlist URL on that edge. */
export interface SteeredEdge {
  id: string;
  url: string;
  region: string;
  reason: string;
  score: number;
}

/** GET /v1/steer answer. */
export interface SteerResponse {
  sessionId: string;
  title: string;
  policy: string;
  /** Token expiry, ms since epoch. */
  expiresAt: number;
  edges: SteeredEdge[];
}

/** catalog.json at the bucket root. */
export interface CatalogRendition {
  name: string; // e.g. "730k"
  bandwidth: number; // bits/s (peak, as in BANDWIDTH)
  averageBandwidth: number; // bits/s
  width: number;
  height: number;
  codecs: string;
}

export interface CatalogTitle {
  id: string; // e.g. "title-0001"
  durationSec: number;
  segmentSec: number;
  segments: number;
  /** 1 = most popular; a Zipf draw over ranks picks what players watch. */
  popularityRank: number;
  renditions: CatalogRendition[];
  mode: 'synthetic' | 'ffmpeg';
  /** fmp4 titles have init.mp4 + .m4s segments; ts titles .ts segments. */
  container: 'ts' | 'fmp4';
}

export interface Catalog {
  version: 1;
  generatedAt: string;
  ladder: string;
  titles: CatalogTitle[];
}

export const CATALOG_KEY = 'catalog.json';

export const contentKeys = {
  master: (title: string) => `vod/${title}/master.m3u8`,
  media: (title: string, rendition: string) => `vod/${title}/${rendition}/index.m3u8`,
  segment: (title: string, rendition: string, index: number, ext: 'ts' | 'm4s' = 'ts') =>
    `vod/${title}/${rendition}/seg-${String(index).padStart(5, '0')}.${ext}`,
  init: (title: string, rendition: string) => `vod/${title}/${rendition}/init.mp4`,
};

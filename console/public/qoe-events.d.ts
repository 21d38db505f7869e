/** Types of qoe-events.js for the tests (the browser loads the .js as it is). */
import type { QoeEvent } from '../../telemetry/events.ts';

export declare const EVENT_VERSION: 1;
export declare const BATCH_LIMITS: { maxEvents: number; maxBodyBytes: number };
export declare function cacheStatusOf(header: string | null | undefined): 'HIT' | 'MISS' | 'STALE' | 'COALESCED' | 'UNKNOWN';
export declare function renditionName(level: { name?: string; bitrate?: number } | undefined): string;
export declare function batchBodies(events: QoeEvent[], maxEvents?: number, maxBytes?: number): string[];

export interface SegmentInput {
  rendition: string;
  bitrate: number;
  index: number;
  bytes: number;
  ttfbMs: number;
  downloadMs: number;
  edgeId: string;
  xCache: string | null | undefined;
}

export declare class BrowserQoe {
  constructor(o: { title: string; sessionId: string; send: (e: QoeEvent) => void; region?: string; isp?: string; abr?: string; uuid?: () => string });
  edgeId: string;
  intent(at: number): void;
  flushStart(): void;
  segment(s: SegmentInput, at: number): QoeEvent;
  firstFrame(at: number, rendition: string, bitrate: number): QoeEvent | undefined;
  switched(at: number, rendition: string, bitrate: number): QoeEvent | undefined;
  stallStart(at: number, bufferS: number): QoeEvent | undefined;
  stallEnd(at: number): QoeEvent | undefined;
  error(at: number, code: string, message: string, fatal: boolean, reason?: string): QoeEvent;
  end(at: number, exitReason: 'completed' | 'watch-time' | 'error' | 'start-failure' | 'aborted', playedS: number): QoeEvent | undefined;
}

export declare class EventBatcher {
  constructor(o: { url: string; maxEvents?: number; flushMs?: number; onResult?: (status: number, events: number) => void });
  sent: number;
  failed: number;
  push(e: QoeEvent): void;
  flush(opts?: { beacon?: boolean }): void;
}

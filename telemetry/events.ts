/**
 * QoE event envelope and types (DESIGN.md §2 Telemetry). Player-sim produces these; the
 * aggregator consumes them. The runtime validator lives in telemetry/validate.ts.
 */

export const EVENT_VERSION = 1 as const;

export const TOPICS = {
  events: 'ocdn.qoe.events.v1',
  aggregates: 'ocdn.qoe.aggregates.v1',
  dlq: 'ocdn.qoe.dlq.v1',
  /** Steering decisions and edge access records, joined by the aggregator to classify misses (issue 15). */
  decisions: 'ocdn.steering.decisions.v1',
  access: 'ocdn.edge.access.v1',
} as const;

export interface EventEnvelope {
  v: 1;
  id: string; // uuid
  ts: number; // event time, ms since epoch
  sessionId: string;
  seq: number; // per-session sequence, from 0
  title: string;
  edgeId: string; // edge serving at the time ('' before the first request)
  region: string;
  isp: string;
  device: string;
  abr: string;
}

export interface SessionStartEvent extends EventEnvelope {
  type: 'session_start';
}
export interface StartupEvent extends EventEnvelope {
  type: 'startup';
  vstMs: number;
  rendition: string;
  bitrate: number;
}
export interface SegmentEvent extends EventEnvelope {
  type: 'segment';
  rendition: string;
  bitrate: number; // bits/s of the rendition
  index: number;
  bytes: number;
  ttfbMs: number;
  downloadMs: number;
  throughputBps: number;
  cacheStatus: 'HIT' | 'MISS' | 'STALE' | 'COALESCED' | 'UNKNOWN';
}
export interface SwitchEvent extends EventEnvelope {
  type: 'switch';
  from: string;
  to: string;
  fromBitrate: number;
  toBitrate: number;
}
export interface StallStartEvent extends EventEnvelope {
  type: 'stall_start';
  bufferS: number;
}
export interface StallEndEvent extends EventEnvelope {
  type: 'stall_end';
  stallMs: number;
}
export interface ErrorEvent extends EventEnvelope {
  type: 'error';
  code: string;
  message: string;
  fatal: boolean;
  /** Why the other side refused, in its words (e.g. steering's reason for a 404 or 503); at most 512 characters. */
  reason?: string;
}
export interface FailoverEvent extends EventEnvelope {
  type: 'failover';
  fromEdge: string;
  toEdge: string;
  reason: string;
}
export interface HeartbeatEvent extends EventEnvelope {
  type: 'heartbeat';
  bufferS: number;
  rendition: string;
  bitrate: number;
  playedS: number;
}
export interface SessionEndEvent extends EventEnvelope {
  type: 'session_end';
  playedS: number;
  stalledS: number;
  avgBitrate: number; // time-weighted, bits/s
  switches: number;
  started: boolean;
  exitReason: 'completed' | 'watch-time' | 'error' | 'start-failure' | 'aborted';
  bytes: number;
}

export type QoeEvent =
  | SessionStartEvent
  | StartupEvent
  | SegmentEvent
  | SwitchEvent
  | StallStartEvent
  | StallEndEvent
  | ErrorEvent
  | FailoverEvent
  | HeartbeatEvent
  | SessionEndEvent;

export type QoeEventType = QoeEvent['type'];

/** Where player-sim sends events; the Kafka producer and a JSON-lines file both implement it. */
export interface EventSink {
  send(event: QoeEvent): Promise<void> | void;
  flush(): Promise<void>;
  close(): Promise<void>;
  /** Events accepted but delivered nowhere, by reason (sinks that can lose events say so). */
  lost?(): Record<string, number>;
}

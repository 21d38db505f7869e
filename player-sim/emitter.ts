import { EVENT_VERSION, type EventEnvelope, type EventSink, type QoeEvent, type QoeEventType } from '../telemetry/events.ts';
import type { Clock } from './clock.ts';
import { uuidFrom } from './rng.ts';

export type EventFields<T extends QoeEventType> = Omit<Extract<QoeEvent, { type: T }>, keyof EventEnvelope | 'type'>;

export interface SessionIdentity {
  sessionId: string;
  title: string;
  region: string;
  isp: string;
  device: string;
  abr: string;
}

/**
 * Stamps one session's events: envelope fields in a fixed order (so JSON.stringify output is
 * stable), seq from 0, ids derived from the run key + session + seq (so a virtual run with the
 * same seed writes the same bytes), timestamps from the session clock. Sink failures are
 * counted, never thrown into the session: telemetry must not change what a player does.
 */
export class SessionEmitter {
  edgeId = '';
  private seq = 0;
  sinkErrors = 0;

  constructor(
    private readonly sink: EventSink,
    private readonly clock: Clock,
    private readonly runKey: string,
    private readonly ident: SessionIdentity,
    private readonly onEvent?: (e: QoeEvent) => void,
  ) {}

  private startAt: number | undefined;

  /**
   * The session started at `atMs`; its session_start goes out once the first edge is known
   * (edgeId set, so sessions count per edge) or before any other event, whichever comes first.
   */
  begin(atMs: number): void {
    this.startAt = atMs;
  }

  /** Sends a pending session_start now (call right after setting edgeId). */
  flushStart(): void {
    if (this.startAt === undefined) return;
    const at = this.startAt;
    this.startAt = undefined;
    this.emit('session_start', {}, at);
  }

  emit<T extends QoeEventType>(type: T, fields: EventFields<T>, atMs: number = this.clock.now()): QoeEvent {
    if (this.startAt !== undefined && type !== 'session_start') this.flushStart();
    const seq = this.seq++;
    const event = {
      v: EVENT_VERSION,
      id: uuidFrom(this.runKey, this.ident.sessionId, seq),
      type,
      ts: Math.round(this.clock.eventTime(atMs)),
      sessionId: this.ident.sessionId,
      seq,
      title: this.ident.title,
      edgeId: this.edgeId,
      region: this.ident.region,
      isp: this.ident.isp,
      device: this.ident.device,
      abr: this.ident.abr,
      ...fields,
    } as unknown as QoeEvent;
    try {
      const r = this.sink.send(event);
      if (r && typeof (r as Promise<void>).catch === 'function') (r as Promise<void>).catch(() => this.sinkErrors++);
    } catch {
      this.sinkErrors++;
    }
    this.onEvent?.(event);
    return event;
  }
}

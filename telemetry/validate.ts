/**
 * Runtime validation of QoE events: JSON Schema (draft 2020-12 subset) compiled by Ajv into
 * plain JS functions, one per event type, picked by `type`, so the hot path is one Map lookup
 * and one generated function. Unknown fields are tolerated (producers may be newer than the
 * aggregator); missing or wrongly typed known fields are rejected with a reason for the DLQ.
 */
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { ErrorCodes, OcdnError } from '../common/errors.ts';
import { EVENT_VERSION, type QoeEvent, type QoeEventType } from './events.ts';

const str = { type: 'string', maxLength: 512 } as const;
const id = { type: 'string', minLength: 1, maxLength: 128 } as const;
const nonNeg = { type: 'number', minimum: 0 } as const;
const nonNegInt = { type: 'integer', minimum: 0 } as const;

const envelope = {
  v: { const: EVENT_VERSION },
  id,
  type: { type: 'string' },
  ts: { type: 'number', minimum: 0, maximum: 8.64e15 },
  sessionId: id,
  seq: nonNegInt,
  title: str,
  edgeId: str,
  region: str,
  isp: str,
  device: str,
  abr: str,
} as const;
const envelopeRequired = Object.keys(envelope);

type Props = Record<string, object>;

const byType: Record<QoeEventType, { props: Props; required: string[] }> = {
  session_start: { props: {}, required: [] },
  startup: { props: { vstMs: nonNeg, rendition: str, bitrate: nonNeg }, required: ['vstMs', 'rendition', 'bitrate'] },
  segment: {
    props: {
      rendition: str,
      bitrate: nonNeg,
      index: nonNegInt,
      bytes: nonNeg,
      ttfbMs: nonNeg,
      downloadMs: nonNeg,
      throughputBps: nonNeg,
      cacheStatus: { enum: ['HIT', 'MISS', 'STALE', 'COALESCED', 'UNKNOWN'] },
    },
    required: ['rendition', 'bitrate', 'index', 'bytes', 'ttfbMs', 'downloadMs', 'throughputBps', 'cacheStatus'],
  },
  switch: { props: { from: str, to: str, fromBitrate: nonNeg, toBitrate: nonNeg }, required: ['from', 'to', 'fromBitrate', 'toBitrate'] },
  stall_start: { props: { bufferS: { type: 'number' } }, required: ['bufferS'] },
  stall_end: { props: { stallMs: nonNeg }, required: ['stallMs'] },
  error: { props: { code: str, message: { type: 'string' }, fatal: { type: 'boolean' }, reason: str }, required: ['code', 'message', 'fatal'] },
  failover: { props: { fromEdge: str, toEdge: str, reason: { type: 'string' } }, required: ['fromEdge', 'toEdge', 'reason'] },
  heartbeat: {
    props: { bufferS: { type: 'number' }, rendition: str, bitrate: nonNeg, playedS: nonNeg },
    required: ['bufferS', 'rendition', 'bitrate', 'playedS'],
  },
  session_end: {
    props: {
      playedS: nonNeg,
      stalledS: nonNeg,
      avgBitrate: nonNeg,
      switches: nonNegInt,
      started: { type: 'boolean' },
      exitReason: { enum: ['completed', 'watch-time', 'error', 'start-failure', 'aborted'] },
      bytes: nonNeg,
    },
    required: ['playedS', 'stalledS', 'avgBitrate', 'switches', 'started', 'exitReason', 'bytes'],
  },
};

export const EVENT_TYPES = Object.keys(byType) as QoeEventType[];

/** The JSON Schema of one event type (exported for docs and other-language producers). */
export function eventSchema(type: QoeEventType): object {
  const t = byType[type];
  return {
    $id: `ocdn.qoe.${type}.v${EVENT_VERSION}`,
    type: 'object',
    properties: { ...envelope, ...t.props, type: { const: type } },
    required: [...envelopeRequired, ...t.required],
  };
}

const ajv = new Ajv({ allErrors: false, strict: true, coerceTypes: false, useDefaults: false, removeAdditional: false });
const validators = new Map<string, ValidateFunction>(EVENT_TYPES.map((t) => [t, ajv.compile(eventSchema(t))]));

export type Validation = { ok: true; event: QoeEvent } | { ok: false; reason: string };

function describe(e: ErrorObject, input: Record<string, unknown>): string {
  const where = e.instancePath ? e.instancePath.slice(1).replace(/\//g, '.') : '';
  if (e.keyword === 'required') return `missing field ${(e.params as { missingProperty: string }).missingProperty}`;
  if (e.keyword === 'const' && where === 'v') return `unsupported version v=${JSON.stringify(input.v ?? null)} (this aggregator reads v=${EVENT_VERSION})`;
  if (e.keyword === 'enum') return `${where} must be one of ${(e.params as { allowedValues: unknown[] }).allowedValues.join(', ')}`;
  return `${where || 'event'} ${e.message ?? 'is invalid'}`;
}

/** Checks a parsed value; never throws. */
export function validateEvent(input: unknown): Validation {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) return { ok: false, reason: 'event is not a JSON object' };
  const type = (input as { type?: unknown }).type;
  if (typeof type !== 'string') return { ok: false, reason: 'missing field type' };
  const fn = validators.get(type);
  if (!fn) return { ok: false, reason: `unknown event type "${type.slice(0, 64)}"` };
  if (fn(input)) return { ok: true, event: input as QoeEvent };
  const err = fn.errors?.[0];
  return { ok: false, reason: err ? describe(err, input as Record<string, unknown>) : 'invalid event' };
}

/** Parses bytes or text from the wire and validates; never throws. */
export function parseEvent(raw: Buffer | string | null | undefined): Validation {
  if (raw === null || raw === undefined || raw.length === 0) return { ok: false, reason: 'empty message' };
  let value: unknown;
  try {
    value = JSON.parse(typeof raw === 'string' ? raw : raw.toString('utf8'));
  } catch (err) {
    return { ok: false, reason: `not JSON: ${(err as Error).message.slice(0, 120)}` };
  }
  return validateEvent(value);
}

/** For producers that want to refuse bad events at the source: OcdnError(BAD_EVENT) with the reason. */
export function assertEvent(input: unknown): QoeEvent {
  const r = validateEvent(input);
  if (!r.ok) throw new OcdnError(ErrorCodes.BAD_EVENT, r.reason);
  return r.event;
}

export type LineValidation = { ok: true; event: QoeEvent } | { ok: false; reason: string; raw: string };

/** What one Kafka message may hold; past either, the whole message is one DLQ record. */
export interface MessageLimits {
  maxEvents: number;
  maxBytes: number;
}

/**
 * The producer packs at most 100 events / 64 KiB per message (producer.ts); the broker takes
 * 1 MiB. Ten times the producer's count leaves room for other producers, yet a message of
 * 40,000 empty lines stays one failure, not 40,000.
 */
export const defaultMessageLimits: MessageLimits = { maxEvents: 1_000, maxBytes: 1 << 20 };

/**
 * One Kafka message → its events. A message holds one event, or several newline-separated ones
 * (the producer packs events of one partition to spare kafkajs' per-message cost). A pack is
 * parsed with one JSON.parse as an array; if any line is broken it is parsed line by line so
 * the good events still count and each bad line goes to the DLQ with its own reason. A message
 * over `limits` is refused whole with one reason, before any parsing.
 */
export function parseMessage(raw: Buffer | string | null | undefined, limits: MessageLimits = defaultMessageLimits): LineValidation[] {
  if (raw === null || raw === undefined || raw.length === 0) return [{ ok: false, reason: 'empty message', raw: '' }];
  const bytes = typeof raw === 'string' ? Buffer.byteLength(raw) : raw.length;
  if (bytes > limits.maxBytes) return [{ ok: false, reason: `message of ${bytes} bytes is over the limit of ${limits.maxBytes}`, raw: '' }];
  const text = typeof raw === 'string' ? raw : raw.toString('utf8');
  if (!text.includes('\n')) {
    const r = parseEvent(text);
    return [r.ok ? r : { ...r, raw: text }];
  }
  let count = 1;
  for (let i = text.indexOf('\n'); i !== -1; i = text.indexOf('\n', i + 1)) count++;
  if (count > limits.maxEvents)
    return [{ ok: false, reason: `message of ${count} lines is over the limit of ${limits.maxEvents} events`, raw: text.slice(0, 1_024) }];
  // One JSON.parse over the whole pack; the lines are only split out when something is wrong.
  let values: unknown[] | undefined;
  try {
    const arr = JSON.parse(`[${text.replaceAll('\n', ',')}]`) as unknown;
    if (Array.isArray(arr) && arr.length === count) values = arr;
  } catch {
    values = undefined;
  }
  let lines: string[] | undefined;
  const out: LineValidation[] = new Array(count);
  for (let i = 0; i < count; i++) {
    const r = values ? validateEvent(values[i]) : parseEvent((lines ??= text.split('\n'))[i]!);
    out[i] = r.ok ? r : { ok: false, reason: r.reason, raw: (lines ??= text.split('\n'))[i]! };
  }
  return out;
}

/** How far an event's time may stray from its arrival (the message's broker timestamp). */
export interface EventTimeBounds {
  /** Like Kafka's log.message.timestamp.after.max.ms. */
  maxFutureSkewMs: number;
  /** Like log.message.timestamp.before.max.ms. */
  maxEventAgeMs: number;
}

export const defaultEventTimeBounds: EventTimeBounds = { maxFutureSkewMs: 5 * 60_000, maxEventAgeMs: 7 * 24 * 3600_000 };

/** Why an event's time is refused given when it arrived, or undefined when it is acceptable. */
export function eventTimeProblem(ts: number, arrivalMs: number, b: EventTimeBounds): string | undefined {
  if (ts > arrivalMs + b.maxFutureSkewMs)
    return `event time ${ts} is ${Math.round((ts - arrivalMs) / 1000)} s after its arrival ${arrivalMs} (max future skew ${b.maxFutureSkewMs / 1000} s)`;
  if (ts < arrivalMs - b.maxEventAgeMs)
    return `event time ${ts} is ${Math.round((arrivalMs - ts) / 1000)} s before its arrival ${arrivalMs} (max event age ${b.maxEventAgeMs / 1000} s)`;
  return undefined;
}

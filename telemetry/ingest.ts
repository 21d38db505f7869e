/**
 * POST /v1/events: QoE beacons from browser players (navigator.sendBeacon) into the same
 * pipeline as player-sim's events. A batch is bounded (EVENT_BATCH_LIMITS), each event is
 * checked by the pipeline's own validator and event-time gate (telemetry/validate.ts), good
 * ones go to the events topic through the spilling producer (keyed by sessionId, as
 * player-sim's), bad ones to the DLQ through the aggregator's DLQ writer. Requests are bounded
 * per client address and in all by token buckets, the per-client map by an LRU.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { LRUCache } from 'lru-cache';
import { Counter, Gauge, type Registry } from 'prom-client';
import { EVENT_BATCH_LIMITS, type EventBatchAck, EventBatchSchema } from '../common/contracts.ts';
import { describeError, ErrorCodes, OcdnError } from '../common/errors.ts';
import { bodyValidator, parseJsonBody, readRawBody, sendError, sendJson } from '../common/http.ts';
import type { Logger } from '../common/log.ts';
import type { QoeEvent } from './events.ts';
import { type EventTimeBounds, eventTimeProblem, validateEvent } from './validate.ts';

export interface IngestRate {
  /** Requests per second one client address may send; bursts up to twice that. */
  perClient: number;
  /** Requests per second over all clients; bursts up to twice that. */
  global: number;
  /** Client addresses tracked; past it the least recently seen one is forgotten. */
  maxClients: number;
}

export const defaultIngestRate: IngestRate = { perClient: 50, global: 2_000, maxClients: 10_000 };

/** An event the ingest refused, with the reason the DLQ record carries. */
export interface RefusedEvent {
  reason: string;
  raw: string;
}

export interface IngestOptions {
  /** The spilling producer (telemetry/producer.ts): resolves once the event is in Kafka or in the spill file. */
  producer: { send(event: QoeEvent): Promise<void> };
  /** The aggregator's DLQ writer; `where` says where the events came from. */
  dlq: (refused: RefusedEvent[], where: Record<string, unknown>) => void;
  /** The aggregator's own bounds, so a beacon is judged as the consumer would judge it. */
  timeBounds: EventTimeBounds;
  rate?: Partial<IngestRate>;
  registry?: Registry;
  log: Logger;
  now?: () => number;
}

/** Media types a beacon body arrives with: sendBeacon(string) sends text/plain, a Blob its own type, fetch may send none. */
const ACCEPTED_TYPES = new Set(['', 'application/json', 'text/plain']);

const checkBatch = bodyValidator(EventBatchSchema, 'event batch');

class TokenBucket {
  private tokens: number;
  private at: number;
  constructor(
    private readonly rate: number,
    private readonly burst: number,
    now: number,
  ) {
    this.tokens = burst;
    this.at = now;
  }

  /** Takes a token: 0 when there was one, else the ms until there will be. */
  take(now: number): number {
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.at) / 1000) * this.rate);
    this.at = now;
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return 0;
    }
    return Math.ceil(((1 - this.tokens) / this.rate) * 1000);
  }
}

export interface Ingest {
  handle(req: IncomingMessage, res: ServerResponse): Promise<void>;
  /** Client addresses with a rate bucket right now (bounded by maxClients). */
  clients(): number;
}

export function createIngest(opts: IngestOptions): Ingest {
  const rate: IngestRate = { ...defaultIngestRate, ...opts.rate };
  for (const k of ['perClient', 'global', 'maxClients'] as const)
    if (!(rate[k] > 0)) throw new OcdnError(ErrorCodes.CONFIG, `ingest ${k} must be positive (got ${rate[k]})`);
  const now = opts.now ?? Date.now;
  const { producer, dlq, timeBounds, log } = opts;
  const buckets = new LRUCache<string, TokenBucket>({ max: rate.maxClients });
  const global = new TokenBucket(rate.global, 2 * rate.global, now());
  const registers = opts.registry ? [opts.registry] : [];
  const m = {
    requests: new Counter({ name: 'ocdn_ingest_requests_total', help: 'POST /v1/events requests, by status', labelNames: ['status'], registers }),
    events: new Counter({
      name: 'ocdn_ingest_events_total',
      help: 'Events of POST /v1/events, by outcome (accepted: produced; invalid: to the DLQ)',
      labelNames: ['outcome'],
      registers,
    }),
  };
  new Gauge({
    name: 'ocdn_ingest_clients',
    help: 'Client addresses with a rate bucket (bounded by the ingest maxClients)',
    registers,
    collect() {
      this.set(buckets.size);
    },
  });

  /** The wait before this client may send again: 0 when it may now. */
  const limited = (client: string, t: number): number => {
    let b = buckets.get(client);
    if (!b) buckets.set(client, (b = new TokenBucket(rate.perClient, 2 * rate.perClient, t)));
    return b.take(t) || global.take(t);
  };

  // Refusals before the body is read close the connection: otherwise Node reads the unread body to reuse it.
  const refuse = (res: ServerResponse, err: OcdnError, headers: Record<string, string> = {}) => {
    res.shouldKeepAlive = false;
    sendError(res, err, { connection: 'close', ...headers });
  };

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    res.once('close', () => m.requests.inc({ status: String(res.statusCode) }));
    const client = req.socket.remoteAddress ?? 'unknown';
    const arrival = now();
    const wait = limited(client, arrival);
    if (wait > 0)
      return refuse(
        res,
        new OcdnError(ErrorCodes.TOO_MANY, `too many event batches from ${client}: at most ${rate.perClient}/s per client, ${rate.global}/s in all`),
        {
          'retry-after': String(Math.max(1, Math.ceil(wait / 1000))),
        },
      );
    const type = String(req.headers['content-type'] ?? '')
      .split(';')[0]!
      .trim()
      .toLowerCase();
    if (!ACCEPTED_TYPES.has(type))
      return refuse(
        res,
        new OcdnError(ErrorCodes.UNSUPPORTED_MEDIA_TYPE, `content type "${type.slice(0, 64)}" is not read here: send JSON as application/json or text/plain`),
      );
    const encoding = String(req.headers['content-encoding'] ?? 'identity').toLowerCase();
    if (encoding !== 'identity')
      return refuse(
        res,
        new OcdnError(ErrorCodes.UNSUPPORTED_MEDIA_TYPE, `content encoding "${encoding.slice(0, 32)}" is not read here: send the body as it is`),
      );
    let raw: Buffer;
    try {
      raw = await readRawBody(req, EVENT_BATCH_LIMITS.maxBodyBytes);
    } catch (err) {
      if (err instanceof OcdnError) return refuse(res, err);
      throw err;
    }
    const batch = checkBatch(parseJsonBody(raw));

    const sends: Promise<void>[] = [];
    const refused: RefusedEvent[] = [];
    for (const input of batch.events) {
      const v = validateEvent(input);
      const reason = v.ok ? eventTimeProblem(v.event.ts, arrival, timeBounds) : v.reason;
      if (reason === undefined && v.ok) sends.push(producer.send(v.event));
      else refused.push({ reason: reason ?? 'invalid event', raw: JSON.stringify(input) });
    }
    if (refused.length) {
      dlq(refused, { source: 'POST /v1/events', client });
      m.events.inc({ outcome: 'invalid' }, refused.length);
    }
    try {
      await Promise.all(sends);
    } catch (err) {
      // Neither Kafka nor the spill file took them: the client may send the batch again (events are deduplicated by id).
      m.events.inc({ outcome: 'lost' }, sends.length);
      log.error({ err: describeError(err), events: sends.length }, 'ingest could not store events');
      throw new OcdnError(ErrorCodes.BROKER_UNAVAILABLE, `events not stored: ${describeError(err)}`);
    }
    if (sends.length) m.events.inc({ outcome: 'accepted' }, sends.length);
    const ack: EventBatchAck = { accepted: sends.length, invalid: refused.length };
    sendJson(res, 202, ack);
  }

  return { handle, clients: () => buckets.size };
}

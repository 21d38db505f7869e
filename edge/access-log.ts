/**
 * Edge access records on Kafka (`ocdn.edge.access.v1`, issue 15): per response, who (CMCD
 * `sid`), what (title, object), how many bytes and which tier served them, so the aggregator
 * can join them to steering's decisions and say why each byte missed.
 *
 * The hit path pays one push: the response's CMCD text is kept as it came (query argument or
 * `CMCD-Session` header), unparsed, in a bounded in-memory batch; a timer parses the session
 * ids, builds the records and hands them to the spilling producer (telemetry/producer.ts). A
 * full batch drops new records and counts them, so memory stays bounded whatever the rate.
 * Records without a session cannot be joined: they are counted and not sent.
 */
import type { IncomingMessage } from 'node:http';
import { Counter, type Registry } from 'prom-client';
import { type AccessTier, type EdgeAccess, TITLE_ID_PATTERN } from '../common/contracts.ts';
import { describeError } from '../common/errors.ts';
import type { Logger } from '../common/log.ts';
import { topicNames } from '../telemetry/kafka.ts';
import { createProducer, type KafkaEventProducer } from '../telemetry/producer.ts';
import { type Cmcd, parseCmcdInto } from './cmcd.ts';
import { queryArg } from './path.ts';

export interface AccessLogOptions {
  edgeId: string;
  brokers: string;
  topicPrefix?: string;
  /** Share of responses recorded, 0..1 (default 1: every one). */
  sample?: number;
  /** Records waiting for the timer at most; past it new ones are dropped (counted). */
  maxBatch?: number;
  /** How often the batch goes to the producer. */
  flushMs?: number;
  spillFile?: string;
  log: Logger;
  registry?: Registry;
}

/** One response as the hit path leaves it: nothing parsed, nothing built. */
interface Pending {
  path: string;
  /** The raw CMCD query value (URL-encoded), else the CMCD-Session header, else undefined. */
  cmcd: string | undefined;
  encoded: boolean;
  bytes: number;
  tier: AccessTier;
  ts: number;
}

const TITLE = new RegExp(TITLE_ID_PATTERN);

/**
 * `sid` found by its spelling alone, as players write it (`sid="…"`, percent-encoded with
 * encodeURIComponent in the query form): a sixth of a full CMCD parse. null = not this plain
 * form (other escaping, odd characters): the caller parses in full.
 */
function plainSid(text: string, encoded: boolean): string | undefined | null {
  const open = encoded ? 'sid%3D%22' : 'sid="';
  const i = text.indexOf(open);
  if (i === -1) return text.includes('sid') ? null : undefined;
  const sep = encoded ? '%2C' : ',';
  if (i !== 0 && !(i >= sep.length && text.startsWith(sep, i - sep.length))) return null;
  const from = i + open.length;
  const to = text.indexOf(encoded ? '%22' : '"', from);
  if (to <= from || to - from > 128) return null;
  const sid = text.slice(from, to);
  return /^[A-Za-z0-9._:-]+$/.test(sid) ? sid : null;
}

/** The CMCD `sid` of raw CMCD text (query form still URL-encoded), or undefined. */
export function sessionOfCmcd(text: string | undefined, encoded: boolean): string | undefined {
  if (text === undefined || text === '') return undefined;
  const plain = plainSid(text, encoded);
  if (plain !== null) return plain;
  return fullSid(text, encoded);
}

function fullSid(text: string, encoded: boolean): string | undefined {
  let plain = text;
  if (encoded) {
    try {
      plain = decodeURIComponent(text.replace(/\+/g, ' '));
    } catch {
      return undefined;
    }
  }
  const into: Cmcd = {};
  parseCmcdInto(plain, into);
  const sid = into.sid;
  return typeof sid === 'string' && sid.length > 0 && sid.length <= 128 ? sid : undefined;
}

/** The value of the CMCD-Session header, found without building req.headers. */
function cmcdSessionHeader(raw: string[]): string | undefined {
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === 12 && name.toLowerCase() === 'cmcd-session') return raw[i + 1];
  }
  return undefined;
}

export class AccessLog {
  private readonly o: Required<Omit<AccessLogOptions, 'spillFile' | 'registry' | 'topicPrefix'>>;
  private readonly producer: KafkaEventProducer;
  private batch: Pending[] = [];
  private readonly timer: NodeJS.Timeout;
  private readonly m: { sent: Counter.Internal; overflow: Counter.Internal; noSession: Counter.Internal; badPath: Counter.Internal; lost: Counter.Internal };
  private warned = false;

  constructor(opts: AccessLogOptions) {
    this.o = {
      edgeId: opts.edgeId,
      brokers: opts.brokers,
      sample: Math.min(1, Math.max(0, opts.sample ?? 1)),
      maxBatch: opts.maxBatch ?? 50_000,
      flushMs: opts.flushMs ?? 250,
      log: opts.log,
    };
    const topic = topicNames(opts.topicPrefix).access;
    this.producer = createProducer({
      brokers: opts.brokers,
      topic,
      clientId: `ocdn-edge-access-${opts.edgeId}`,
      ...(opts.spillFile ? { spillFile: opts.spillFile } : {}),
      log: opts.log.child({ part: 'access' }),
      registry: opts.registry,
    });
    const c = new Counter({
      name: 'ocdn_edge_access_records_total',
      help: 'Access records (miss classification) by outcome: sent to the producer, overflow (batch full, dropped), no-session (no CMCD sid, not sent), bad-path, lost (batches of records the producer refused)',
      labelNames: ['result'],
      registers: opts.registry ? [opts.registry] : [],
    });
    // Children made once: the hit path increments nothing, the timer a handful.
    this.m = {
      sent: c.labels('sent'),
      overflow: c.labels('overflow'),
      noSession: c.labels('no-session'),
      badPath: c.labels('bad-path'),
      lost: c.labels('lost'),
    };
    this.timer = setInterval(() => this.flush(), this.o.flushMs);
    this.timer.unref();
    opts.log.info({ topic, sample: this.o.sample }, 'publishing access records');
  }

  /** One response served: `bytes` of the object at `path` from `tier`. The hit path's only cost. */
  served(req: IncomingMessage, path: string, query: string, bytes: number, tier: AccessTier): void {
    if (this.o.sample < 1 && Math.random() >= this.o.sample) return;
    if (this.batch.length >= this.o.maxBatch) {
      this.m.overflow.inc();
      return;
    }
    const q = query === '' ? undefined : queryArg(query, 'CMCD');
    const cmcd = q ?? cmcdSessionHeader(req.rawHeaders);
    this.batch.push({ path, cmcd, encoded: q !== undefined, bytes, tier, ts: Date.now() });
  }

  /** The producer counts what it lost (ocdn_telemetry_producer_events_total{result="lost"}); this says so once. */
  private readonly onLost = (err: unknown): void => {
    this.m.lost.inc();
    if (!this.warned) this.o.log.warn({ err: describeError(err) }, 'access records could not be published (further failures are only counted)');
    this.warned = true;
  };

  /** Records waiting for the timer. */
  get pending(): number {
    return this.batch.length;
  }

  /** Hands the batch to the producer (which batches, and spills while the broker is away). */
  flush(): void {
    if (this.batch.length === 0) return;
    const batch = this.batch;
    this.batch = [];
    let sent = 0;
    let noSession = 0;
    let badPath = 0;
    let last: Promise<void> | undefined;
    for (const p of batch) {
      const sessionId = sessionOfCmcd(p.cmcd, p.encoded);
      if (sessionId === undefined) {
        noSession++;
        continue;
      }
      // /vod/<title>/…
      const end = p.path.indexOf('/', 5);
      const title = p.path.slice(5, end === -1 ? undefined : end);
      if (!p.path.startsWith('/vod/') || !TITLE.test(title)) {
        badPath++;
        continue;
      }
      const rec: EdgeAccess = { sessionId, edge: this.o.edgeId, title, object: p.path.slice(0, 1_024), bytes: p.bytes, tier: p.tier, ts: p.ts };
      // Records of one producer chunk share its promise: one handler per chunk, not per record.
      const done = this.producer.sendRaw(JSON.stringify(rec), sessionId);
      if (done !== last) {
        last = done;
        done.catch(this.onLost);
      }
      sent++;
    }
    if (sent) this.m.sent.inc(sent);
    if (noSession) this.m.noSession.inc(noSession);
    if (badPath) this.m.badPath.inc(badPath);
  }

  /** Flushes and closes the producer (what the broker has not taken stays in the spill file). */
  async close(): Promise<void> {
    clearInterval(this.timer);
    this.flush();
    await this.producer.close();
  }
}

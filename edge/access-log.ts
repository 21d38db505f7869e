/**
 * Edge access records on Kafka (`ocdn.edge.access.v1`, issue 15): per response, who (CMCD
 * `sid`), what (object), how many bytes and which tier served them, so the aggregator can join
 * them to steering's decisions and say why each byte missed.
 *
 * The hit path pays one push: the response's CMCD text is kept as it came (query argument or
 * `CMCD-Session` header), unparsed, with the URL when it carries a path token (whose session,
 * signed by steering, wins over CMCD's), in a bounded in-memory batch. A timer parses the session ids
 * and packs the batch, one pack per partition (edge/access-records.ts), for the spilling producer
 * (telemetry/producer.ts). A full batch drops new records and counts them, so memory stays
 * bounded whatever the rate. Records without a session cannot be joined: they are counted and
 * not sent.
 */
import type { IncomingMessage } from 'node:http';
import { Counter, type Registry } from 'prom-client';
import type { AccessTier } from '../common/contracts.ts';
import { describeError } from '../common/errors.ts';
import type { Logger } from '../common/log.ts';
import { PATH_TOKEN_PREFIX } from '../common/token.ts';
import { topicNames } from '../telemetry/topics.ts';
import { createProducer, type KafkaEventProducer } from '../telemetry/producer.ts';
import { packAccesses, type PendingAccess } from './access-records.ts';
import { queryArg } from './path.ts';

export interface AccessLogOptions {
  edgeId: string;
  brokers: string;
  topicPrefix?: string;
  /** Share of responses recorded, 0..1 (default 1: every one). */
  sample?: number;
  /** Records waiting for the timer at most; past it new ones are dropped (counted). */
  maxBatch?: number;
  /**
   * How often the batch goes to the producer. 100 ms: records held longer outlive young-generation
   * GCs and cost more to collect than they save in packing (250 ms cost ~1 µs more per record).
   */
  flushMs?: number;
  spillFile?: string;
  log: Logger;
  registry?: Registry;
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
  private batch: PendingAccess[] = [];
  private readonly timer: NodeJS.Timeout;
  private readonly m: { sent: Counter.Internal; overflow: Counter.Internal; noSession: Counter.Internal; badPath: Counter.Internal; lost: Counter.Internal };
  private warned = false;

  constructor(opts: AccessLogOptions) {
    this.o = {
      edgeId: opts.edgeId,
      brokers: opts.brokers,
      sample: Math.min(1, Math.max(0, opts.sample ?? 1)),
      maxBatch: opts.maxBatch ?? 50_000,
      flushMs: opts.flushMs ?? 100,
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
      help: 'Access records (miss classification) by outcome: sent to the producer, overflow (batch full, dropped), no-session (no CMCD sid, not sent), bad-path, lost (records in packs the producer refused)',
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
    const url = req.url;
    const tokenUrl = url?.startsWith(PATH_TOKEN_PREFIX) ? url : undefined;
    this.batch.push({ path, cmcd, encoded: q !== undefined, tokenUrl, bytes, tier, ts: Date.now() });
  }

  /** The producer counts what it lost (ocdn_telemetry_producer_events_total{result="lost"}, in packs); this says so once, in records. */
  private lost(records: number, err: unknown): void {
    this.m.lost.inc(records);
    if (!this.warned) this.o.log.warn({ records, err: describeError(err) }, 'access records could not be published (further failures are only counted)');
    this.warned = true;
  }

  /** Records waiting for the timer. */
  get pending(): number {
    return this.batch.length;
  }

  /** Hands the batch to the producer (which batches, and spills while the broker is away). */
  flush(): void {
    if (this.batch.length === 0) return;
    const batch = this.batch;
    this.batch = [];
    const { packs, noSession, badPath } = packAccesses(batch, this.o.edgeId, (sid) => this.producer.partitionOfKey(sid));
    let sent = 0;
    for (const pack of packs) {
      this.producer.sendRaw(pack.json, pack.key).catch((err: unknown) => this.lost(pack.records, err));
      sent += pack.records;
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

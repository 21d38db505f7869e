/**
 * QoE event producers (EventSink implementations) for player-sim and anything else that emits.
 *
 * KafkaEventProducer: kafkajs has no linger, so events are gathered into chunks (sealed by size
 * or after `lingerMs`), and whatever chunks are ready go out as one request while the previous
 * one is in flight (natural batching under load). A session's events go to the partition a
 * message keyed by its sessionId would (Kafka's murmur2 partitioner), so they stay in one
 * partition and in order. kafkajs spends ~20 µs of CPU per message, which caps one core at
 * ~40k messages/s; so by default up to `eventsPerMessage` events of one partition travel in one
 * message (newline-separated JSON, header `ocdn-events`), which the aggregator unpacks.
 * `eventsPerMessage: 1` sends the plain form: one event per message, key = sessionId. When the broker is unreachable (or the in-memory queue is full),
 * chunks are appended to a JSON-lines spill file (fsync'd) in order, and replayed from it in
 * order once the broker answers again; only then does the producer go back to memory.
 *
 * "Acknowledged" = the promise returned by send()/flush() resolved: the event is either acked by
 * Kafka (acks=all) or durably in the spill file, which a later producer with the same spill file
 * replays even after a crash.
 *
 * Delivery is at-least-once and the aggregator dedups by event id. The kafkajs producer is NOT
 * idempotent on purpose: when a request is written but its answer lost, kafkajs rolls its
 * sequence numbers back, and the replay (packed differently, from the spill file) reuses them
 * for other content, which the broker then drops as a "duplicate" — acknowledged events lost
 * (test/telemetry/lost-answer.test.ts).
 */
import { closeSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { open, rename, rm, type FileHandle } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { CompressionTypes, Partitioners, type Admin, type Message, type Producer } from 'kafkajs';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { describeError, ErrorCodes, OcdnError } from '../common/errors.ts';
import { createLogger, type Logger } from '../common/log.ts';
import { isAlive } from '../common/ports.ts';
import { Backoff, waitFor } from '../common/retry.ts';
import type { EventSink, QoeEvent } from './events.ts';
import { createKafka } from './kafka.ts';
import { parseBrokers, topicNames } from './topics.ts';
import { partitionFor } from './partitioner.ts';
import { assertEvent } from './validate.ts';

export interface ProducerOptions {
  brokers?: string | string[];
  topic?: string;
  clientId?: string;
  /** Longest an event waits for companions before its chunk is sent. */
  lingerMs?: number;
  /** A chunk is sealed at this many events. */
  batchSize?: number;
  /** Most events in one produce request. */
  maxRequestEvents?: number;
  /** Events packed into one Kafka message (same partition); 1 = one event per message keyed by sessionId. */
  eventsPerMessage?: number;
  /** Events held in memory before new ones go to the spill file. */
  maxQueue?: number;
  /** JSON-lines file used while the broker is unreachable. Default .ocdn/spill/<clientId>.jsonl */
  spillFile?: string;
  /** Most bytes the spill file may hold; past it events wait in memory (up to maxQueue), then are lost (counted). */
  maxSpillBytes?: number;
  /**
   * Backoff while spilling: the first retry of the broker comes within `retryMs` (full jitter),
   * each further failure doubles that bound up to 10 × `retryMs`; a success starts it over.
   */
  retryMs?: number;
  compression?: 'none' | 'gzip';
  /** Validate every event before accepting it (BAD_EVENT on failure). Default false: the aggregator's DLQ is the gate. */
  validate?: boolean;
  maxEventBytes?: number;
  /** close() keeps replaying the spill this long before leaving the rest on disk. */
  closeTimeoutMs?: number;
  log?: Logger;
  registry?: Registry;
}

/** A chunk is sealed at this size, so one chunk always fits a request. */
const CHUNK_BYTES = 256 * 1024;
/**
 * Per produce request: at most this many bytes of events for any one partition (the broker
 * refuses a partition batch over message.max.bytes, 1 MB by default), and this many in all
 * (one request in flight, so bigger requests mean fewer round trips).
 */
const PARTITION_BYTES = 900 * 1024;
const REQUEST_BYTES = 4 * 1024 * 1024;
/** Bytes of events packed into one message. */
const MESSAGE_BYTES = 64 * 1024;

interface Chunk {
  values: string[];
  keys: (string | null)[];
  bytes: number;
  done: Promise<void>;
  resolve: () => void;
  reject: (err: Error) => void;
}

function newChunk(): Chunk {
  let resolveFn!: () => void;
  let rejectFn!: (err: Error) => void;
  const done = new Promise<void>((res, rej) => {
    resolveFn = res;
    rejectFn = rej;
  });
  // Callers that do not await send() must not see an unhandled rejection.
  done.catch(() => undefined);
  return { values: [], keys: [], bytes: 0, done, resolve: resolveFn, reject: rejectFn };
}

/** Takes `<file>.lock`; when another live process holds it, falls back to a per-pid file. */
function lockSpill(file: string): string {
  for (const candidate of [file, file.replace(/(\.jsonl)?$/, `-${process.pid}.jsonl`)]) {
    const lock = `${candidate}.lock`;
    try {
      const fd = openSync(lock, 'wx');
      writeFileSync(fd, `${process.pid}\n`);
      closeSync(fd);
      return candidate;
    } catch {
      const pid = Number(readFileSafe(lock).trim());
      if (!pid || pid === process.pid || !isAlive(pid)) {
        writeFileSync(lock, `${process.pid}\n`);
        return candidate;
      }
    }
  }
  throw new OcdnError(ErrorCodes.INTERNAL, `spill file ${file} is locked by another process`);
}

function readFileSafe(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

export class KafkaEventProducer implements EventSink {
  readonly spillFile: string;
  private readonly topic: string;
  private readonly producer: Producer;
  private readonly log: Logger;
  private readonly lingerMs: number;
  private readonly batchSize: number;
  private readonly maxRequestEvents: number;
  private readonly maxQueue: number;
  private readonly retryMs: number;
  private readonly replayBackoff: Backoff;
  private readonly validate: boolean;
  private readonly maxEventBytes: number;
  private readonly closeTimeoutMs: number;
  private readonly compression: CompressionTypes;
  private readonly eventsPerMessage: number;
  private readonly admin: Admin;
  private partitions = 0;
  private readonly partitionCache = new Map<string, number>();
  private roundRobin = 0;

  private open: Chunk = newChunk();
  private lingerTimer: NodeJS.Timeout | undefined;
  private ready: Chunk[] = [];
  private last: Chunk | undefined;
  private memoryEvents = 0;
  private mode: 'memory' | 'spill' = 'memory';
  private connected = false;
  private pumping = false;
  private pumpAgain = false;
  private nextReplayAt = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private closed = false;

  private spill: FileHandle | undefined;
  private readonly maxSpillBytes: number;
  /** After a failed spill write, the file is not tried again before this. */
  private spillRetryAt = 0;
  private spillProblem: string | undefined;
  private offsetWarned = false;
  /** Events that reached neither Kafka nor the spill file, by reason. */
  private readonly lostByReason: Record<string, number> = {};
  private spillSize = 0;
  private spillRead = 0;
  private spillEvents = 0;
  private readonly offsetFile: string;
  private readonly startup: Promise<void>;

  private readonly m: {
    events: Counter<'result'>;
    errors: Counter;
    requests: Histogram;
  };
  /** Produce requests sent, and the events and seconds they took (for benchmarks). */
  readonly requestStats = { requests: 0, events: 0, seconds: 0 };

  constructor(opts: ProducerOptions = {}) {
    const clientId = opts.clientId ?? 'ocdn-producer';
    this.log = opts.log ?? createLogger('producer');
    this.topic = opts.topic ?? topicNames().events;
    this.lingerMs = opts.lingerMs ?? 10;
    this.batchSize = opts.batchSize ?? 1_000;
    this.maxRequestEvents = opts.maxRequestEvents ?? 20_000;
    this.eventsPerMessage = Math.max(1, opts.eventsPerMessage ?? 100);
    this.maxQueue = opts.maxQueue ?? 200_000;
    this.retryMs = opts.retryMs ?? 1_000;
    this.replayBackoff = new Backoff({ baseMs: this.retryMs, maxMs: 10 * this.retryMs });
    this.validate = opts.validate ?? false;
    this.maxEventBytes = opts.maxEventBytes ?? 256 * 1024;
    this.closeTimeoutMs = opts.closeTimeoutMs ?? 10_000;
    this.maxSpillBytes = opts.maxSpillBytes ?? 1 << 30;
    this.compression = opts.compression === 'gzip' ? CompressionTypes.GZIP : CompressionTypes.None;
    const spillWanted = resolve(opts.spillFile ?? join('.ocdn', 'spill', `${clientId.replace(/[^\w.-]/g, '_')}.jsonl`));
    mkdirSync(dirname(spillWanted), { recursive: true });
    this.spillFile = lockSpill(spillWanted);
    this.offsetFile = `${this.spillFile}.offset`;

    const kafka = createKafka({
      brokers: parseBrokers(opts.brokers),
      clientId,
      log: this.log,
      // Fail over to the spill file quickly rather than holding callers for kafkajs' long retries.
      retry: { retries: 2, initialRetryTime: 100, maxRetryTime: 1_000 },
      requestTimeout: 10_000,
    });
    // One request in flight keeps a session's events in order; see the header for why not idempotent.
    // The Java client's murmur2 partitioner (kafkajs' default since 2.0), named so kafkajs does not warn about its change.
    this.producer = kafka.producer({
      idempotent: false,
      maxInFlightRequests: 1,
      allowAutoTopicCreation: false,
      createPartitioner: Partitioners.DefaultPartitioner,
    });
    this.admin = kafka.admin();
    this.producer.on(this.producer.events.DISCONNECT, () => (this.connected = false));

    const registry = opts.registry;
    const regs = registry ? [registry] : [];
    this.m = {
      events: new Counter({
        name: 'ocdn_telemetry_producer_events_total',
        help: 'Producer events by outcome (sent, spilled, replayed)',
        labelNames: ['result'],
        registers: regs,
      }),
      errors: new Counter({
        name: 'ocdn_telemetry_producer_send_errors_total',
        help: 'Produce requests that failed (events went to the spill file)',
        registers: regs,
      }),
      requests: new Histogram({
        name: 'ocdn_telemetry_producer_request_seconds',
        help: 'Produce request latency (acks=all)',
        buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
        registers: regs,
      }),
    };
    const self = this;
    new Gauge({
      name: 'ocdn_telemetry_producer_backlog_events',
      help: 'Events accepted but not yet acknowledged by Kafka, by where they wait',
      labelNames: ['where'],
      registers: regs,
      collect() {
        this.set({ where: 'memory' }, self.memoryEvents);
        this.set({ where: 'spill' }, self.spillEvents);
      },
    });
    this.startup = this.openSpill();
  }

  /** Events that reached neither Kafka nor the spill file (their send() rejected), by reason. */
  lost(): Record<string, number> {
    return { ...this.lostByReason };
  }

  private loseChunks(chunks: Chunk[], reason: string, err: Error): void {
    let n = 0;
    for (const c of chunks) {
      n += c.values.length;
      c.reject(err);
    }
    this.memoryEvents -= n;
    this.lostByReason[reason] = (this.lostByReason[reason] ?? 0) + n;
    this.m.events.inc({ result: 'lost' }, n);
    this.log.error({ events: n, reason, err: err.message }, 'events lost');
  }

  /** Events accepted but not yet in Kafka: in memory and in the spill file. */
  backlog(): { memory: number; spill: number; mode: 'memory' | 'spill' } {
    return { memory: this.memoryEvents, spill: this.spillEvents, mode: this.mode };
  }

  send(event: QoeEvent): Promise<void> {
    if (this.validate) assertEvent(event);
    return this.enqueue(event.sessionId ?? null, JSON.stringify(event));
  }

  /** Sends an already-serialised value (one line of JSON); its key is taken from it on replay. */
  sendRaw(value: string, key: string | null = null): Promise<void> {
    if (value.includes('\n')) throw new OcdnError(ErrorCodes.BAD_EVENT, 'a raw event must be a single line');
    return this.enqueue(key, value);
  }

  private enqueue(key: string | null, value: string): Promise<void> {
    if (this.closed) return Promise.reject(new OcdnError(ErrorCodes.USAGE, 'producer is closed'));
    if (value.length > this.maxEventBytes)
      return Promise.reject(new OcdnError(ErrorCodes.BAD_EVENT, `event of ${value.length} bytes is larger than ${this.maxEventBytes}`));
    const c = this.open;
    c.values.push(value);
    c.keys.push(key);
    c.bytes += value.length + 1;
    this.memoryEvents++;
    if (this.mode === 'memory' && this.memoryEvents > this.maxQueue) {
      this.log.warn({ queued: this.memoryEvents }, 'in-memory queue full: spilling to disk until the backlog is sent');
      this.mode = 'spill';
    }
    if (c.values.length >= this.batchSize || c.bytes >= CHUNK_BYTES) this.seal();
    else if (!this.lingerTimer) this.lingerTimer = setTimeout(() => this.seal(), this.lingerMs);
    return c.done;
  }

  private seal(): Chunk | undefined {
    if (this.lingerTimer) {
      clearTimeout(this.lingerTimer);
      this.lingerTimer = undefined;
    }
    if (this.open.values.length === 0) return this.last;
    const c = this.open;
    this.open = newChunk();
    this.ready.push(c);
    this.last = c;
    void this.pump();
    return c;
  }

  /** Resolves once every event sent before the call is acknowledged (in Kafka or in the spill file). */
  async flush(): Promise<void> {
    const c = this.seal();
    if (c) await c.done;
  }

  /** flush() and then wait until the spill file is replayed too (or the deadline passes). */
  async drain(timeoutMs = 30_000): Promise<boolean> {
    // Not flush(): with the broker away and the spill unwritable, chunks wait in memory unresolved.
    this.seal();
    return waitFor(
      () => {
        if (this.mode !== 'spill' && this.spillEvents === 0 && this.memoryEvents === 0) return true;
        // Someone is waiting: try the broker soon, whatever the backoff says.
        this.nextReplayAt = Math.min(this.nextReplayAt, Date.now() + 100);
        void this.pump();
        return false;
      },
      { timeoutMs, intervalMs: 50 },
    ).catch(() => false);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.seal();
    this.closed = true;
    const drained = await this.drain(this.closeTimeoutMs);
    if (!drained)
      this.log.warn(
        { spilled: this.spillEvents, file: this.spillFile },
        'broker still unreachable at close: events stay in the spill file and are replayed by the next producer using it',
      );
    if (this.retryTimer) clearInterval(this.retryTimer);
    // A pass ends within kafkajs' request timeout and retries; the bound only guards against a hang.
    await waitFor(() => !this.pumping, { timeoutMs: 60_000, intervalMs: 10 }).catch(() => this.log.warn('producer pump still busy at close'));
    const stranded = [...this.ready, ...(this.open.values.length ? [this.open] : [])];
    this.ready = [];
    this.open = newChunk();
    if (stranded.length) {
      const reason = `unsent at close: broker unreachable, ${this.spillProblem ?? 'spill not reached'}`;
      this.loseChunks(stranded, reason, new OcdnError(ErrorCodes.BROKER_UNAVAILABLE, reason));
    }
    await this.producer.disconnect().catch(() => undefined);
    await this.admin.disconnect().catch(() => undefined);
    await this.spill?.close().catch(() => undefined);
    this.spill = undefined;
    if (this.spillEvents === 0) await rm(this.spillFile, { force: true }).catch(() => undefined);
    await rm(`${this.spillFile}.lock`, { force: true }).catch(() => undefined);
  }

  private async openSpill(): Promise<void> {
    this.spill = await open(this.spillFile, 'a+');
    this.spillSize = (await this.spill.stat()).size;
    this.spillRead = Math.min(Number(readFileSafe(this.offsetFile).trim()) || 0, this.spillSize);
    if (this.spillSize > this.spillRead) {
      // A previous run left events behind: replay them before anything new. A last line
      // without its newline was torn by a crash mid-write: that event is lost, and said so.
      const tail = await this.readSpill(this.spillSize - 1, 1);
      if (tail[0] !== 10) {
        const whole = await this.readSpill(this.spillRead, this.spillSize - this.spillRead);
        const keep = whole.lastIndexOf(10) + 1;
        await this.spill.truncate(this.spillRead + keep);
        this.spillSize = this.spillRead + keep;
        this.lostByReason['torn line in the spill file'] = (this.lostByReason['torn line in the spill file'] ?? 0) + 1;
        this.m.events.inc({ result: 'lost' });
        this.log.error({ file: this.spillFile, bytes: whole.length - keep }, 'spill file ends in a torn line (a crash mid-write): that event is lost');
      }
      const text = (await this.readSpill(this.spillRead, this.spillSize - this.spillRead)).toString('utf8');
      this.spillEvents = text.split('\n').filter((l) => l.length > 0).length;
      this.mode = this.spillEvents > 0 ? 'spill' : this.mode;
      this.log.info({ file: this.spillFile, events: this.spillEvents }, 'replaying events spilled by a previous run');
      this.ensureRetryTimer();
      void this.pump();
    } else if (this.spillSize > 0) {
      await this.truncateSpill();
    }
  }

  private ensureRetryTimer(): void {
    if (this.retryTimer) return;
    this.retryTimer = setInterval(() => void this.pump(), Math.max(50, Math.min(this.retryMs, 500)));
    this.retryTimer.unref();
  }

  private async readSpill(position: number, length: number): Promise<Buffer> {
    const buf = Buffer.alloc(length);
    let got = 0;
    while (got < length) {
      const { bytesRead } = await this.spill!.read(buf, got, length - got, position + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    return buf.subarray(0, got);
  }

  private async truncateSpill(): Promise<void> {
    await this.spill!.truncate(0);
    this.spillSize = 0;
    this.spillRead = 0;
    this.spillEvents = 0;
    await rm(this.offsetFile, { force: true });
  }

  private async produce(values: string[], keys: (string | null)[]): Promise<void> {
    if (!this.connected) {
      await this.producer.connect();
      await this.admin.connect();
      const meta = await this.admin.fetchTopicMetadata({ topics: [this.topic] });
      this.partitions = meta.topics[0]?.partitions.length ?? 0;
      this.partitionCache.clear();
      if (this.partitions === 0) throw new OcdnError(ErrorCodes.BROKER_UNAVAILABLE, `topic ${this.topic} has no partitions`);
      this.connected = true;
    }
    const t0 = performance.now();
    await this.producer.send({ topic: this.topic, acks: -1, compression: this.compression, messages: this.messages(values, keys) });
    this.replayBackoff.reset();
    const s = (performance.now() - t0) / 1000;
    this.m.requests.observe(s);
    this.requestStats.requests++;
    this.requestStats.events += values.length;
    this.requestStats.seconds += s;
  }

  /**
   * Adds the chunk's bytes per partition to `acc` when no partition goes over PARTITION_BYTES
   * (before the first connect the partition count is unknown: then the whole request is held
   * to PARTITION_BYTES, as if it all went to one partition).
   */
  private fitsPartitions(c: Chunk, acc: Map<number, number>): boolean {
    const add = new Map<number, number>();
    for (let i = 0; i < c.values.length; i++) {
      const key = c.keys[i] ?? null;
      const p = this.partitions > 0 && key !== null ? this.partitionOf(key) : -1;
      add.set(p, (add.get(p) ?? 0) + c.values[i]!.length + 1);
    }
    const unknown = (add.get(-1) ?? 0) + (acc.get(-1) ?? 0);
    for (const [p, b] of add) if (p >= 0 && (acc.get(p) ?? 0) + b + unknown > PARTITION_BYTES) return false;
    if (unknown > 0 && [...acc.values(), ...add.values()].reduce((a, b) => a + b, 0) > PARTITION_BYTES) return false;
    for (const [p, b] of add) acc.set(p, (acc.get(p) ?? 0) + b);
    return true;
  }

  /**
   * The partition a message keyed `key` goes to, or undefined before the producer has read the
   * topic's partition count: lets a caller pack records of several keys into one value that
   * still lands where each key's own messages would.
   */
  partitionOfKey(key: string): number | undefined {
    return this.partitions > 0 ? this.partitionOf(key) : undefined;
  }

  private partitionOf(key: string | null): number {
    if (key === null) return this.roundRobin++ % this.partitions;
    let p = this.partitionCache.get(key);
    if (p === undefined) {
      // A session sends many events: its partition is worked out once, not per event and per pass.
      if (this.partitionCache.size >= 100_000) this.partitionCache.clear();
      p = partitionFor(key, this.partitions);
      this.partitionCache.set(key, p);
    }
    return p;
  }

  /** Packs events per partition into messages of at most eventsPerMessage events / MESSAGE_BYTES. */
  private messages(values: string[], keys: (string | null)[]): Message[] {
    if (this.eventsPerMessage === 1) {
      const out: Message[] = new Array(values.length);
      for (let i = 0; i < values.length; i++) out[i] = { key: keys[i] ?? null, value: values[i]! };
      return out;
    }
    const out: Message[] = [];
    const open = new Map<number, { lines: string[]; bytes: number }>();
    const emit = (partition: number, pack: { lines: string[] }) => {
      out.push({ partition, value: pack.lines.join('\n'), headers: { 'ocdn-events': String(pack.lines.length) } });
    };
    for (let i = 0; i < values.length; i++) {
      const p = this.partitionOf(keys[i] ?? null);
      let pack = open.get(p);
      if (!pack) open.set(p, (pack = { lines: [], bytes: 0 }));
      pack.lines.push(values[i]!);
      pack.bytes += values[i]!.length + 1;
      if (pack.lines.length >= this.eventsPerMessage || pack.bytes >= MESSAGE_BYTES) {
        emit(p, pack);
        open.delete(p);
      }
    }
    for (const [p, pack] of open) emit(p, pack);
    return out;
  }

  /** The one loop that moves chunks: to Kafka in memory mode, to the spill file in spill mode. */
  private async pump(): Promise<void> {
    if (this.pumping) {
      this.pumpAgain = true;
      return;
    }
    this.pumping = true;
    try {
      await this.startup;
      do {
        this.pumpAgain = false;
        for (;;) {
          const now = Date.now();
          if (this.mode === 'memory') {
            if (this.ready.length === 0) break;
            await this.sendReady();
          } else if (this.ready.length > 0 && now >= this.spillRetryAt) await this.writeReadyToSpill();
          else if (this.spillEvents > 0) {
            if (now < this.nextReplayAt || !(await this.replayStep())) break;
          } else if (this.ready.length > 0 && now >= this.nextReplayAt) {
            // The spill file is empty but cannot take these: try the broker with them straight from memory.
            if (this.spillSize > 0) await this.truncateSpill();
            this.mode = 'memory';
            await this.sendReady();
          } else break;
        }
        if (this.mode === 'spill' && this.spillEvents === 0 && this.ready.length === 0) {
          // Emptied before memory mode shows, so drain() never reports done over a stale file.
          if (this.spillSize > 0) await this.truncateSpill();
          this.mode = 'memory';
          this.log.info('spill file replayed; back to sending from memory');
          this.pumpAgain = this.ready.length > 0;
        }
      } while (this.pumpAgain);
    } catch (err) {
      this.log.error({ err: describeError(err) }, 'producer pump failed');
    } finally {
      this.pumping = false;
    }
  }

  private async sendReady(): Promise<void> {
    const taken: Chunk[] = [];
    let n = 0;
    let bytes = 0;
    const perPartition = new Map<number, number>();
    while (this.ready.length > 0) {
      const c = this.ready[0]!;
      if (taken.length > 0) {
        if (n + c.values.length > this.maxRequestEvents || bytes + c.bytes > REQUEST_BYTES) break;
        if (!this.fitsPartitions(c, perPartition)) break;
      } else this.fitsPartitions(c, perPartition);
      this.ready.shift();
      taken.push(c);
      n += c.values.length;
      bytes += c.bytes;
    }
    const values = taken.length === 1 ? taken[0]!.values : taken.flatMap((c) => c.values);
    const keys = taken.length === 1 ? taken[0]!.keys : taken.flatMap((c) => c.keys);
    try {
      await this.produce(values, keys);
      this.memoryEvents -= n;
      this.m.events.inc({ result: 'sent' }, n);
      for (const c of taken) c.resolve();
    } catch (err) {
      this.m.errors.inc();
      this.log.warn({ err: describeError(err), events: n }, 'broker unreachable: spilling to disk and retrying');
      this.mode = 'spill';
      this.nextReplayAt = Date.now() + this.replayBackoff.next();
      this.ensureRetryTimer();
      // The failed chunks are older than anything still queued: they go to the file first.
      this.ready.unshift(...taken);
    }
  }

  /** Writes `buf` at `position`, looping over short writes; how far it got, and the error that stopped it. */
  private async writeFully(buf: Buffer, position: number): Promise<{ written: number; err?: unknown }> {
    let done = 0;
    try {
      while (done < buf.length) {
        const { bytesWritten } = await this.spill!.write(buf, done, buf.length - done, position + done);
        if (bytesWritten <= 0) throw new OcdnError(ErrorCodes.INTERNAL, `spill write made no progress at byte ${position + done}`);
        done += bytesWritten;
      }
      return { written: done };
    } catch (err) {
      return { written: done, err };
    }
  }

  /**
   * Appends the ready chunks to the spill file, whole lines only: what goes past the byte cap or
   * fails to write is cut off the file again (no torn line) and waits in memory for the broker,
   * in order behind what did fit; past maxQueue such events are lost, each caller told why. A
   * chunk resolves once all of its events are durable somewhere.
   */
  private async writeReadyToSpill(): Promise<void> {
    const taken = this.ready;
    this.ready = [];
    let at = this.spillSize;
    let spilledEvents = 0;
    let full = 0; // chunks wholly written
    let failure: { reason: string; err: Error } | undefined;
    let partial: { c: Chunk; k: number } | undefined;
    for (const c of taken) {
      const buf = Buffer.from(`${c.values.join('\n')}\n`, 'utf8');
      const room = this.maxSpillBytes - at;
      let limit = buf.length;
      if (buf.length > room) {
        limit = room > 0 ? buf.subarray(0, room).lastIndexOf(10) + 1 : 0;
        failure = {
          reason: 'spill full',
          err: new OcdnError(ErrorCodes.BROKER_UNAVAILABLE, `broker unreachable and spill file ${this.spillFile} at its cap of ${this.maxSpillBytes} bytes`),
        };
      }
      const { written, err } = limit > 0 ? await this.writeFully(limit === buf.length ? buf : buf.subarray(0, limit), at) : { written: 0 };
      if (err !== undefined)
        failure = {
          reason: `spill write failed: ${(err as NodeJS.ErrnoException).code ?? 'error'}`,
          err: new OcdnError(ErrorCodes.BROKER_UNAVAILABLE, `broker unreachable and spill file ${this.spillFile} not writable: ${describeError(err)}`),
        };
      if (written === buf.length) {
        at += written;
        spilledEvents += c.values.length;
        full++;
        continue;
      }
      // Keep the whole lines written; the rest of this chunk stays in memory.
      const keep = buf.subarray(0, written).lastIndexOf(10) + 1;
      let k = 0;
      for (let i = 0; i < keep; i++) if (buf[i] === 10) k++;
      at += keep;
      if (k > 0) {
        partial = { c, k };
        spilledEvents += k;
      }
      break;
    }
    // A torn tail (a short write, a write refused midway) is cut off before anything counts as
    // spilled: once the backlog says so, a reader of the file must find whole lines only.
    if (failure) await this.spill!.truncate(at).catch(() => undefined);
    let synced = true;
    if (at > this.spillSize) {
      try {
        await this.spill!.datasync();
      } catch (err) {
        synced = false;
        failure ??= {
          reason: `spill write failed: ${(err as NodeJS.ErrnoException).code ?? 'error'}`,
          err: new OcdnError(ErrorCodes.BROKER_UNAVAILABLE, `spill file ${this.spillFile} could not be synced: ${describeError(err)}`),
        };
      }
    }
    if (synced && at > this.spillSize) {
      this.spillSize = at;
      this.spillEvents += spilledEvents;
      this.memoryEvents -= spilledEvents;
      this.m.events.inc({ result: 'spilled' }, spilledEvents);
      for (const c of taken.slice(0, full)) c.resolve();
      if (partial) {
        const moved = partial.c.values.splice(0, partial.k);
        partial.c.keys.splice(0, partial.k);
        partial.c.bytes -= moved.reduce((sum, v) => sum + v.length + 1, 0);
      }
      this.ensureRetryTimer();
    }
    if (!failure) {
      this.spillProblem = undefined;
      return;
    }
    // What was written but not synced is cut off too (the torn tail already was), so replay never meets it.
    if (!synced) await this.spill!.truncate(this.spillSize).catch(() => undefined);
    const waiting = synced ? taken.slice(full) : taken;
    if (this.spillProblem !== failure.reason)
      this.log.error({ file: this.spillFile, reason: failure.reason }, 'spill file cannot take events; holding them in memory');
    this.spillProblem = failure.reason;
    this.spillRetryAt = Date.now() + this.retryMs;
    this.ensureRetryTimer();
    if (this.memoryEvents > this.maxQueue) this.loseChunks(waiting, failure.reason, failure.err);
    else this.ready.unshift(...waiting);
  }

  /** The replay position, written to a temporary file and renamed (a crash leaves the old or the new one, never half). */
  private async saveOffset(): Promise<void> {
    const tmp = `${this.offsetFile}.tmp`;
    try {
      const fh = await open(tmp, 'w');
      try {
        await fh.writeFile(`${this.spillRead}\n`);
        await fh.datasync();
      } finally {
        await fh.close();
      }
      await rename(tmp, this.offsetFile);
      this.offsetWarned = false;
    } catch (err) {
      await rm(tmp, { force: true }).catch(() => undefined);
      // Replay goes on from memory; after a crash the events since the last saved offset are
      // sent again, which the aggregator drops as duplicates.
      if (!this.offsetWarned) this.log.warn({ file: this.offsetFile, err: describeError(err) }, 'replay offset not saved; replay continues');
      this.offsetWarned = true;
    }
  }

  /** Sends the next block of the spill file. False when the broker is still unreachable. */
  private async replayStep(): Promise<boolean> {
    const block = await this.readSpill(this.spillRead, Math.min(this.spillSize - this.spillRead, 4 << 20));
    const end = block.lastIndexOf(10);
    if (end < 0) {
      // Cannot happen with our own writes (always whole lines); skip garbage rather than loop.
      this.spillRead = this.spillSize;
      this.spillEvents = 0;
      return true;
    }
    const lines = block.subarray(0, end).toString('utf8').split('\n');
    const take: string[] = [];
    let takeBytes = 0;
    for (const line of lines) {
      // Replay is rare: hold a request to what one partition may take, whatever the spread.
      if (take.length > 0 && (take.length >= this.maxRequestEvents || takeBytes + line.length + 1 > PARTITION_BYTES)) break;
      take.push(line);
      takeBytes += line.length + 1;
    }
    const bytes = take.reduce((s, l) => s + Buffer.byteLength(l) + 1, 0);
    const values: string[] = [];
    const keys: (string | null)[] = [];
    for (const line of take) {
      if (line.length === 0) continue;
      values.push(line);
      let key: string | null = null;
      try {
        const sid = (JSON.parse(line) as { sessionId?: unknown }).sessionId;
        if (typeof sid === 'string') key = sid;
      } catch {
        /* raw value without a session: no key */
      }
      keys.push(key);
    }
    try {
      if (values.length) await this.produce(values, keys);
    } catch (err) {
      this.m.errors.inc();
      this.nextReplayAt = Date.now() + this.replayBackoff.next();
      this.log.debug({ err: describeError(err), spilled: this.spillEvents }, 'broker still unreachable');
      return false;
    }
    this.spillRead += bytes;
    this.spillEvents = Math.max(0, this.spillEvents - values.length);
    this.m.events.inc({ result: 'replayed' }, values.length);
    await this.saveOffset();
    if (this.spillEvents === 0) this.log.info({ file: this.spillFile }, 'spill replayed');
    return true;
  }
}

export function createProducer(opts: ProducerOptions = {}): KafkaEventProducer {
  return new KafkaEventProducer(opts);
}

/** The JSON-lines file sink, for callers that pick a sink here (`ocdn play`). */
export { JsonLinesSink } from './jsonl-sink.ts';

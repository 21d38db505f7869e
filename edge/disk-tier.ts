/**
 * The edge's disk tier: every object the edge fills is also written here, bounded in bytes under
 * its own eviction policy, so objects pushed out of RAM (or too large for it) are still a local
 * hit, and an edge killed and started again on the same directory serves what it held.
 *
 * One file per object, named by the SHA-256 of its key: a magic line, a 4-byte big-endian header
 * length, the JSON header (DiskMeta), then the body. Writes go to a temp file that is fsynced and
 * renamed over the final name, so a file under its final name is complete unless the disk itself
 * lies; on start every file is read back and its body hashed against the header's SHA-256, and a
 * torn or foreign file is deleted rather than served.
 */
import { createHash, randomBytes } from 'node:crypto';
import { type FileHandle, mkdir, open, readdir, readFile, rename, unlink } from 'node:fs/promises';
import type { ServerResponse } from 'node:http';
import { join } from 'node:path';
import { Counter, Gauge, type Registry } from 'prom-client';
import { describeError } from '../common/errors.ts';
import type { Logger } from '../common/log.ts';
import { drained, type FillBody } from './fill.ts';
import { type ByteStore, type CachePolicy, createByteStore } from './policies/index.ts';
import type { ByteSpan } from './range.ts';

const MAGIC = Buffer.from('OCDN-OBJ-1\n');
/** Headers past this are not ours (a key is at most a path, the rest a few fields). */
const MAX_HEADER_BYTES = 16 * 1024;
/** Bytes a write may have queued for the disk before its fill waits (reads no more upstream). */
const WRITE_WINDOW_BYTES = 256 * 1024;
/**
 * Room left in the header for what is only known once the body is in (its hash, its size when
 * upstream gave none): the header is written last, padded with spaces (JSON ignores them) to
 * the length reserved before the body.
 */
const HEADER_SLACK = 256;
const PLACEHOLDER_SHA = '0'.repeat(64);
/** Largest read of a disk hit: what one response holds of a file at once. */
const READ_CHUNK_BYTES = 256 * 1024;

/** What the disk keeps of an object besides its body: enough to answer a hit as the RAM tier does. */
export interface DiskMeta {
  key: string;
  sha256: string;
  contentType: string;
  cacheControl: string;
  /** When the content left the origin (Age counts from it). */
  bornAt: number;
  /** End of freshness, ms since epoch. */
  freshUntil: number;
  size: number;
  /** The origin's CMSD-Static (edge/cmsd.ts), passed through on disk hits as on RAM ones. */
  cmsdStatic?: string;
}

/** An object the disk holds: where its body starts in its file. */
export interface DiskHeld {
  meta: DiskMeta;
  file: string;
  bodyOffset: number;
  /** Read back whole against its hash since indexed or written. */
  verified?: boolean;
}

export interface DiskTierOptions {
  dir: string;
  capacityBytes: number;
  policy: CachePolicy;
  log: Logger;
  registry: Registry;
}

export interface DiskScan {
  objects: number;
  bytes: number;
  /** Files refused on start (truncated, hash mismatch, not ours) and deleted. */
  torn: number;
  ms: number;
}

export class DiskTier {
  readonly capacityBytes: number;
  private readonly index: ByteStore<DiskHeld>;
  /** Keys being written now (one write per key at a time). */
  private readonly writing = new Set<string>();
  private idleWaiters: (() => void)[] = [];
  private readonly m: { hits: Counter; writes: Counter<'result'>; torn: Counter };

  private constructor(private readonly o: DiskTierOptions) {
    this.capacityBytes = o.capacityBytes;
    this.index = createByteStore<DiskHeld>(o.policy, {
      maxBytes: o.capacityBytes,
      onRemove: (_key, held, reason) => {
        // 'set' replaced the file under the same name by rename: nothing to delete.
        if (reason !== 'set') void unlink(held.file).catch(() => undefined);
      },
    });
    const registers = [o.registry];
    const index = this.index;
    new Gauge({
      name: 'ocdn_edge_disk_bytes',
      help: 'Bytes held by the disk tier (bodies)',
      registers,
      collect() {
        this.set(index.bytes);
      },
    });
    new Gauge({
      name: 'ocdn_edge_disk_items',
      help: 'Objects held by the disk tier',
      registers,
      collect() {
        this.set(index.size);
      },
    });
    this.m = {
      hits: new Counter({ name: 'ocdn_edge_disk_hits_total', help: 'RAM misses answered from the disk tier', registers }),
      writes: new Counter({ name: 'ocdn_edge_disk_writes_total', help: 'Disk tier writes, by result (ok, error, skipped)', labelNames: ['result'], registers }),
      torn: new Counter({ name: 'ocdn_edge_disk_torn_total', help: 'Files refused and deleted, on start or when a read found them torn', registers }),
    };
  }

  /** Opens `dir` (created if missing), indexing and verifying what it holds. */
  static async open(o: DiskTierOptions): Promise<{ tier: DiskTier; scan: DiskScan }> {
    const tier = new DiskTier(o);
    const scan = await tier.scan();
    return { tier, scan };
  }

  get bytes(): number {
    return this.index.bytes;
  }

  get items(): number {
    return this.index.size;
  }

  has(key: string): boolean {
    return this.index.has(key);
  }

  keys(): IterableIterator<string> {
    return this.index.keys();
  }

  /** The object under `key` without counting an access (stale-if-error looks here). */
  peek(key: string): DiskHeld | undefined {
    return this.index.peek(key);
  }

  /** The object under `key`, counted as an access (a disk hit about to be served). */
  get(key: string): DiskHeld | undefined {
    const held = this.index.get(key);
    if (held !== undefined) this.m.hits.inc();
    return held;
  }

  /**
   * The object under `key`, read whole and checked against its hash (in-process callers that want
   * the body: admin fills, the catalog), or undefined when the disk does not hold it or its file
   * went bad (then deleted).
   */
  async read(key: string): Promise<{ meta: DiskMeta; body: Buffer } | undefined> {
    const held = this.get(key);
    if (held === undefined) return undefined;
    try {
      const parsed = parseFile(await readFile(held.file));
      if (parsed === undefined || parsed.meta.key !== key || parsed.body.length !== held.meta.size) throw new Error('file no longer matches its index entry');
      if (createHash('sha256').update(parsed.body).digest('hex') !== held.meta.sha256) throw new Error('body no longer matches its hash');
      return { meta: held.meta, body: parsed.body };
    } catch (err) {
      this.condemn(held, err);
      return undefined;
    }
  }

  /**
   * Streams the body of `held` (or `span` of it) to `res` from its file in chunks of at most
   * READ_CHUNK_BYTES, never holding it whole unless `keep` (the caller promotes it to RAM). Until
   * a file has once read back whole against its hash (on start, or since it was written), a whole
   * read hashes it on the way; every read checks its length. The last chunk waits for the verdict:
   * a file that reads short or hashes wrong is deleted and `res` destroyed, so the client sees a
   * body cut short of its Content-Length. A range of an object not kept reads only that range.
   * Resolves with whether `res` was ended whole, and the body when kept.
   */
  async pipe(res: ServerResponse, held: DiskHeld, span: ByteSpan | undefined, keep: boolean): Promise<{ ok: boolean; body?: Buffer }> {
    const size = held.meta.size;
    const whole = keep || span === undefined;
    const from = whole ? 0 : span.start;
    const to = whole ? size : span.end + 1;
    const hash = whole && !held.verified ? createHash('sha256') : undefined;
    const kept: Buffer[] | undefined = keep ? [] : undefined;
    let pending: Buffer | undefined;
    let fh: FileHandle | undefined;
    try {
      fh = await open(held.file, 'r');
      let pos = from;
      while (pos < to) {
        if (res.destroyed) return { ok: false };
        const want = Math.min(READ_CHUNK_BYTES, to - pos);
        const buf = Buffer.allocUnsafe(want);
        const { bytesRead } = await fh.read(buf, 0, want, held.bodyOffset + pos);
        if (bytesRead === 0) throw new Error(`file read ${pos - from} of ${to - from} bytes`);
        const chunk = bytesRead === want ? buf : buf.subarray(0, bytesRead);
        hash?.update(chunk);
        kept?.push(chunk);
        const at = pos;
        pos += bytesRead;
        let piece: Buffer | undefined = chunk;
        if (span !== undefined && whole) {
          const s = Math.max(span.start, at);
          const e = Math.min(span.end + 1, pos);
          piece = s < e ? chunk.subarray(s - at, e - at) : undefined;
        }
        if (piece === undefined) continue;
        const out = pending;
        pending = piece;
        if (out !== undefined && !res.write(out)) await drained(res);
      }
      if (hash !== undefined) {
        if (hash.digest('hex') !== held.meta.sha256) throw new Error('body does not match its hash');
        held.verified = true;
      }
    } catch (err) {
      if (res.destroyed) return { ok: false };
      this.condemn(held, err);
      res.destroy();
      return { ok: false };
    } finally {
      fh?.close().catch(() => undefined);
    }
    if (res.destroyed) return { ok: false };
    res.end(pending);
    return kept === undefined ? { ok: true } : { ok: true, body: kept.length === 1 ? kept[0]! : Buffer.concat(kept, size) };
  }

  /**
   * Reads the body of `held` into `sink` (edge/fill.ts) for every request joined to it, in chunks
   * of at most READ_CHUNK_BYTES, waiting while its slowest reader lags; hashed as pipe() does.
   * Fails the sink (its readers' responses cut) and deletes the file when it reads short or hashes
   * wrong; stops early once no one reads a body not kept. Resolves with whether it all came.
   */
  async produce(held: DiskHeld, sink: FillBody): Promise<boolean> {
    const size = held.meta.size;
    const hash = held.verified ? undefined : createHash('sha256');
    let fh: FileHandle | undefined;
    try {
      fh = await open(held.file, 'r');
      let pos = 0;
      while (pos < size) {
        if (pos > 0 && !sink.keeping && sink.readers === 0) {
          sink.fail(new Error('no one reads it any more'));
          return false;
        }
        const want = Math.min(READ_CHUNK_BYTES, size - pos);
        const buf = Buffer.allocUnsafe(want);
        const { bytesRead } = await fh.read(buf, 0, want, held.bodyOffset + pos);
        if (bytesRead === 0) throw new Error(`file read ${pos} of ${size} bytes`);
        const chunk = bytesRead === want ? buf : buf.subarray(0, bytesRead);
        hash?.update(chunk);
        sink.push(chunk);
        pos += bytesRead;
        await sink.room();
      }
      if (hash !== undefined) {
        if (hash.digest('hex') !== held.meta.sha256) throw new Error('body does not match its hash');
        held.verified = true;
      }
      sink.end();
      return true;
    } catch (err) {
      this.condemn(held, err);
      sink.fail(err instanceof Error ? err : new Error(String(err)));
      return false;
    } finally {
      fh?.close().catch(() => undefined);
    }
  }

  /**
   * A write of `meta.key` to fill as its body arrives, or undefined when it is not to be written
   * (too large for this tier, already being written). Same bytes already on disk (the declared
   * hash matches) only move its freshness: see refresh().
   */
  writer(meta: DiskMeta): DiskWrite | undefined {
    if ((meta.size > 0 && meta.size > this.capacityBytes / 4) || this.writing.has(meta.key)) {
      this.m.writes.inc({ result: 'skipped' });
      return undefined;
    }
    this.writing.add(meta.key);
    return new DiskWrite(join(this.o.dir, fileNameOf(meta.key)), meta, this.capacityBytes / 4, {
      done: (result, held, err) => {
        this.writing.delete(meta.key);
        this.m.writes.inc({ result });
        if (held !== undefined) this.index.set(held.meta.key, held, held.meta.size);
        if (result === 'error') this.o.log.warn({ key: meta.key, err: describeError(err) }, 'disk tier write failed');
        if (this.writing.size === 0) for (const r of this.idleWaiters.splice(0)) r();
      },
    });
  }

  /** Whether the disk holds `key` with these bytes: a refill of it then moves only its freshness. */
  holds(key: string, sha256: string | undefined): boolean {
    return sha256 !== undefined && this.index.peek(key)?.meta.sha256 === sha256;
  }

  /** The same bytes were fetched again: only the freshness moved (a revalidation). */
  refresh(key: string, sha256: string, freshUntil: number, bornAt: number): void {
    const held = this.index.peek(key);
    if (held !== undefined && held.meta.sha256 === sha256) held.meta = { ...held.meta, freshUntil, bornAt };
  }

  delete(key: string): boolean {
    return this.index.delete(key);
  }

  /** Resolves once every write in progress has finished (tests, shutdown). */
  idle(): Promise<void> {
    if (this.writing.size === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  /** A file found bad while read: deleted, never served again. */
  private condemn(held: DiskHeld, err: unknown): void {
    this.m.torn.inc();
    this.o.log.warn({ key: held.meta.key, file: held.file, err: describeError(err) }, 'disk tier file is torn (length or hash mismatch); deleted');
    // A file renamed over it since is another object's: only this entry's goes.
    if (this.index.peek(held.meta.key) === held) this.index.delete(held.meta.key);
  }

  private async scan(): Promise<DiskScan> {
    const t0 = Date.now();
    await mkdir(this.o.dir, { recursive: true });
    let torn = 0;
    for (const name of (await readdir(this.o.dir)).sort()) {
      const file = join(this.o.dir, name);
      // A temp file is a write that never reached its rename: never complete, by construction.
      if (name.includes('.tmp-')) {
        await unlink(file).catch(() => undefined);
        continue;
      }
      if (!name.endsWith('.obj')) continue;
      const parsed = await readFile(file)
        .then(parseFile)
        .catch(() => undefined);
      const ok =
        parsed !== undefined &&
        fileNameOf(parsed.meta.key) === name &&
        parsed.body.length === parsed.meta.size &&
        createHash('sha256').update(parsed.body).digest('hex') === parsed.meta.sha256;
      if (!ok) {
        torn++;
        this.m.torn.inc();
        this.o.log.warn({ file }, 'disk tier file is torn or not ours (length or hash mismatch); deleted');
        await unlink(file).catch(() => undefined);
        continue;
      }
      this.index.set(parsed.meta.key, { meta: parsed.meta, file, bodyOffset: parsed.bodyOffset, verified: true }, parsed.meta.size);
    }
    const scan = { objects: this.index.size, bytes: this.index.bytes, torn, ms: Date.now() - t0 };
    this.o.log.info({ dir: this.o.dir, ...scan }, 'disk tier indexed');
    return scan;
  }
}

function fileNameOf(key: string): string {
  return `${createHash('sha256').update(key).digest('hex')}.obj`;
}

function parseFile(buf: Buffer): { meta: DiskMeta; body: Buffer; bodyOffset: number } | undefined {
  if (buf.length < MAGIC.length + 4 || !buf.subarray(0, MAGIC.length).equals(MAGIC)) return undefined;
  const hlen = buf.readUInt32BE(MAGIC.length);
  const start = MAGIC.length + 4;
  if (hlen > MAX_HEADER_BYTES || start + hlen > buf.length) return undefined;
  let meta: DiskMeta;
  try {
    meta = JSON.parse(buf.subarray(start, start + hlen).toString()) as DiskMeta;
  } catch {
    return undefined;
  }
  if (typeof meta?.key !== 'string' || typeof meta.sha256 !== 'string' || typeof meta.size !== 'number') return undefined;
  return { meta, body: buf.subarray(start + hlen), bodyOffset: start + hlen };
}

/**
 * One object being written as its body arrives: to a temp file, the body at an offset past a
 * reserved header, the header last (its hash is only known then), fsynced, renamed over the final
 * name. Writes queue one after another; the fill waits on ready() while too much is queued.
 */
export class DiskWrite {
  private readonly tmp: string;
  private readonly bodyOffset: number;
  private readonly reserved: number;
  private chain: Promise<FileHandle>;
  private queuedBytes = 0;
  private appended = 0;
  private written = 0;
  private failed: unknown;
  private roomWaits: (() => void)[] = [];
  private finished = false;

  constructor(
    private readonly file: string,
    private readonly meta: DiskMeta,
    private readonly maxBytes: number,
    private readonly hooks: { done: (result: 'ok' | 'error' | 'skipped', held: DiskHeld | undefined, err?: unknown) => void },
  ) {
    this.tmp = `${file}.tmp-${randomBytes(4).toString('hex')}`;
    const placeholder = JSON.stringify({ ...meta, sha256: PLACEHOLDER_SHA, size: Number.MAX_SAFE_INTEGER });
    this.reserved = Buffer.byteLength(placeholder) + HEADER_SLACK;
    this.bodyOffset = MAGIC.length + 4 + this.reserved;
    this.chain = open(this.tmp, 'w');
    this.chain.catch((err: unknown) => (this.failed ??= err));
  }

  /** Queues `chunk` after what came before; false once the write has failed or outgrown the tier. */
  write(chunk: Buffer): boolean {
    if (this.failed !== undefined || this.finished) return false;
    if (this.appended + chunk.length > this.maxBytes) {
      this.failed = new Error('object grew past what the disk tier keeps');
      return false;
    }
    const pos = this.bodyOffset + this.appended;
    this.appended += chunk.length;
    this.queuedBytes += chunk.length;
    this.chain = this.chain.then(async (fh) => {
      if (this.failed === undefined) {
        try {
          await fh.write(chunk, 0, chunk.length, pos);
          this.written += chunk.length;
        } catch (err) {
          this.failed ??= err;
        }
      }
      this.queuedBytes -= chunk.length;
      if (this.queuedBytes <= WRITE_WINDOW_BYTES) for (const r of this.roomWaits.splice(0)) r();
      return fh;
    });
    return true;
  }

  /** Resolves when the disk has taken enough of what is queued. */
  ready(): Promise<void> {
    if (this.queuedBytes <= WRITE_WINDOW_BYTES || this.failed !== undefined) return Promise.resolve();
    return new Promise((r) => this.roomWaits.push(r));
  }

  /** The body is complete and checked: header, fsync, rename, indexed. */
  async commit(final: Pick<DiskMeta, 'sha256' | 'size' | 'freshUntil'>): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    let fh: FileHandle | undefined;
    try {
      fh = await this.chain;
      if (this.failed !== undefined) throw this.failed;
      if (this.written !== final.size) throw new Error(`wrote ${this.written} of ${final.size} bytes`);
      const meta: DiskMeta = { ...this.meta, ...final };
      const json = Buffer.from(JSON.stringify(meta));
      if (json.length > this.reserved) throw new Error('header outgrew its reserved room');
      const header = Buffer.alloc(MAGIC.length + 4 + this.reserved, 0x20);
      MAGIC.copy(header, 0);
      header.writeUInt32BE(this.reserved, MAGIC.length);
      json.copy(header, MAGIC.length + 4);
      await fh.write(header, 0, header.length, 0);
      await fh.sync();
      await fh.close();
      fh = undefined;
      await rename(this.tmp, this.file);
      this.hooks.done('ok', { meta, file: this.file, bodyOffset: this.bodyOffset });
    } catch (err) {
      await fh?.close().catch(() => undefined);
      await unlink(this.tmp).catch(() => undefined);
      this.hooks.done(this.failed instanceof Error && /outgrew|grew past/.test(this.failed.message) ? 'skipped' : 'error', undefined, err);
    }
  }

  /** The fill failed or was purged: nothing of it stays. */
  async abort(): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    this.failed ??= new Error('aborted');
    const fh = await this.chain.catch(() => undefined);
    await fh?.close().catch(() => undefined);
    await unlink(this.tmp).catch(() => undefined);
    this.hooks.done('skipped', undefined);
  }
}

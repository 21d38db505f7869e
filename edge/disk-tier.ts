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
import { mkdir, open, readdir, readFile, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { Counter, Gauge, type Registry } from 'prom-client';
import { describeError } from '../common/errors.ts';
import type { Logger } from '../common/log.ts';
import { type ByteStore, type CachePolicy, createByteStore } from './policies/index.ts';

const MAGIC = Buffer.from('OCDN-OBJ-1\n');
/** Headers past this are not ours (a key is at most a path, the rest a few fields). */
const MAX_HEADER_BYTES = 16 * 1024;
/** Writes in flight at once: the fill path never waits on them, but they share the disk. */
const WRITE_CONCURRENCY = 4;
/** Objects waiting to be written; past this new ones are not written (counted), so memory stays bounded. */
const WRITE_QUEUE_MAX = 256;

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

interface Indexed {
  meta: DiskMeta;
  file: string;
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
  private readonly index: ByteStore<Indexed>;
  private readonly queue: { meta: DiskMeta; body: Buffer }[] = [];
  private readonly queued = new Set<string>();
  private writing = 0;
  private idleWaiters: (() => void)[] = [];
  private readonly m: { hits: Counter; writes: Counter<'result'>; torn: Counter };

  private constructor(private readonly o: DiskTierOptions) {
    this.capacityBytes = o.capacityBytes;
    this.index = createByteStore<Indexed>(o.policy, {
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
      hits: new Counter({ name: 'ocdn_edge_disk_hits_total', help: 'RAM misses answered from the disk tier (promoted to RAM)', registers }),
      writes: new Counter({ name: 'ocdn_edge_disk_writes_total', help: 'Disk tier writes, by result (ok, error, skipped)', labelNames: ['result'], registers }),
      torn: new Counter({ name: 'ocdn_edge_disk_torn_total', help: 'Files refused and deleted when the disk tier was indexed on start', registers }),
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

  /**
   * The object under `key`, read whole (the caller promotes it to RAM), or undefined when the
   * disk does not hold it or its file went away meanwhile.
   */
  async read(key: string): Promise<{ meta: DiskMeta; body: Buffer } | undefined> {
    const held = this.index.get(key);
    if (held === undefined) return undefined;
    try {
      const parsed = parseFile(await readFile(held.file));
      if (parsed === undefined || parsed.meta.key !== key || parsed.body.length !== held.meta.size) throw new Error('file no longer matches its index entry');
      this.m.hits.inc();
      return parsed;
    } catch (err) {
      this.o.log.warn({ key, err: describeError(err) }, 'disk tier read failed; dropping the entry');
      if (this.index.peek(key) === held) this.index.delete(key);
      return undefined;
    }
  }

  /** Queues `body` to be written under `key`; never waits for the disk. */
  write(meta: DiskMeta, body: Buffer): void {
    if (meta.size > this.capacityBytes / 4) return void this.m.writes.inc({ result: 'skipped' });
    const held = this.index.peek(meta.key);
    if (held !== undefined && held.meta.sha256 === meta.sha256) {
      // Same bytes already on disk: only the freshness moved (a revalidation).
      held.meta = { ...held.meta, freshUntil: meta.freshUntil, bornAt: meta.bornAt };
      return;
    }
    if (this.queued.has(meta.key)) return;
    if (this.queue.length >= WRITE_QUEUE_MAX) return void this.m.writes.inc({ result: 'skipped' });
    this.queue.push({ meta, body });
    this.queued.add(meta.key);
    this.pump();
  }

  delete(key: string): boolean {
    return this.index.delete(key);
  }

  /** Resolves once every queued write has finished (tests, shutdown). */
  idle(): Promise<void> {
    if (this.writing === 0 && this.queue.length === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  private pump(): void {
    while (this.writing < WRITE_CONCURRENCY && this.queue.length > 0) {
      const job = this.queue.shift()!;
      this.writing++;
      void this.writeFile(job.meta, job.body).finally(() => {
        this.writing--;
        this.queued.delete(job.meta.key);
        this.pump();
        if (this.writing === 0 && this.queue.length === 0) for (const r of this.idleWaiters.splice(0)) r();
      });
    }
  }

  private async writeFile(meta: DiskMeta, body: Buffer): Promise<void> {
    const file = join(this.o.dir, fileNameOf(meta.key));
    const tmp = `${file}.tmp-${randomBytes(4).toString('hex')}`;
    const header = Buffer.from(JSON.stringify(meta));
    const len = Buffer.alloc(4);
    len.writeUInt32BE(header.length);
    try {
      const fh = await open(tmp, 'w');
      try {
        await fh.writev([MAGIC, len, header, body]);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, file);
      this.index.set(meta.key, { meta, file }, meta.size);
      this.m.writes.inc({ result: 'ok' });
    } catch (err) {
      this.m.writes.inc({ result: 'error' });
      this.o.log.warn({ key: meta.key, err: describeError(err) }, 'disk tier write failed');
      await unlink(tmp).catch(() => undefined);
    }
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
      this.index.set(parsed.meta.key, { meta: parsed.meta, file }, parsed.meta.size);
    }
    const scan = { objects: this.index.size, bytes: this.index.bytes, torn, ms: Date.now() - t0 };
    this.o.log.info({ dir: this.o.dir, ...scan }, 'disk tier indexed');
    return scan;
  }
}

function fileNameOf(key: string): string {
  return `${createHash('sha256').update(key).digest('hex')}.obj`;
}

function parseFile(buf: Buffer): { meta: DiskMeta; body: Buffer } | undefined {
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
  return { meta, body: buf.subarray(start + hlen) };
}

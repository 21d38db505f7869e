import { createWriteStream, fsync, mkdirSync, type WriteStream } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { ErrorCodes, OcdnError } from '../common/errors.ts';
import type { EventSink, QoeEvent } from './events.ts';

export interface JsonLinesSinkOptions {
  /** Append to an existing file (default) or start it afresh. */
  append?: boolean;
  /** Lines are gathered into writes of about this many bytes (default 256 KiB). */
  batchBytes?: number;
}

/**
 * QoE events as JSON lines in a file: what `ocdn play` writes without --brokers, and what
 * `ocdn qoe` reads offline. Lines are batched into large writes in send() order (in virtual
 * mode that order is deterministic, so one seed gives a byte-identical file); flush() writes
 * what is pending and fsyncs, close() flushes and closes. A write error surfaces on the next call.
 */
export class JsonLinesSink implements EventSink {
  readonly path: string;
  private readonly out: WriteStream;
  private readonly batchBytes: number;
  private pending: string[] = [];
  private pendingBytes = 0;
  private failed: Error | undefined;
  private closed = false;
  private count = 0;
  /** Lines whose write the file system confirmed. */
  private confirmed = 0;

  constructor(path: string, opts: JsonLinesSinkOptions = {}) {
    this.path = resolve(path);
    this.batchBytes = opts.batchBytes ?? 256 * 1024;
    mkdirSync(dirname(this.path), { recursive: true });
    this.out = createWriteStream(this.path, { flags: opts.append === false ? 'w' : 'a' });
    this.out.on('error', (err) => (this.failed = err));
  }

  /** After a write error: the lines accepted but never confirmed written, by reason. */
  lost(): Record<string, number> {
    if (!this.failed) return {};
    const code = (this.failed as NodeJS.ErrnoException).code ?? 'error';
    return { [`events file write failed: ${code}`]: this.count - this.confirmed };
  }

  /** Lines accepted so far. */
  get written(): number {
    return this.count;
  }

  send(event: QoeEvent): void {
    if (this.closed) throw new OcdnError(ErrorCodes.USAGE, 'sink is closed');
    if (this.failed) throw this.failed;
    const line = `${JSON.stringify(event)}\n`;
    this.pending.push(line);
    this.pendingBytes += line.length;
    this.count++;
    if (this.pendingBytes >= this.batchBytes) this.writePending();
  }

  private writePending(): boolean {
    if (this.pending.length === 0) return true;
    const chunk = this.pending.join('');
    const lines = this.pending.length;
    this.pending = [];
    this.pendingBytes = 0;
    return this.out.write(chunk, (err) => {
      if (!err) this.confirmed += lines;
    });
  }

  async flush(): Promise<void> {
    if (this.failed) throw this.failed;
    this.writePending();
    await new Promise<void>((res, rej) => this.out.write('', (err) => (err ? rej(err) : res())));
    const fd = (this.out as unknown as { fd: number | null }).fd;
    if (typeof fd === 'number') await new Promise<void>((res, rej) => fsync(fd, (err) => (err ? rej(err) : res())));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.flush();
    this.closed = true;
    await new Promise<void>((res, rej) => this.out.end((err?: Error | null) => (err ? rej(err) : res())));
    if (this.failed) throw this.failed;
  }
}

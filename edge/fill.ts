/**
 * The body of one fill as it comes from upstream, read once and handed to every request that
 * wants it: the one that started the fill and those that joined it, each at its own pace.
 *
 * Memory is bounded by configuration, not by clients: a body that will be kept in RAM is held
 * whole anyway (it fits the RAM store's largest entry), so a slow reader costs nothing more; any
 * other body keeps only what its slowest reader has not yet taken, and the producer waits (reads
 * no more upstream) while that exceeds the window. Its start is gone once released, so a request
 * arriving after that cannot join (`joinable`): it waits for the fill to end and is served from
 * where the object went.
 */
import type { ServerResponse } from 'node:http';
import type { ByteSpan } from './range.ts';

/** Bytes a streamed (not kept) body may hold ahead of its slowest reader. */
export const FILL_WINDOW_BYTES = 256 * 1024;

export interface Cursor {
  /** Index of the next chunk this reader takes, counting released ones. */
  next: number;
}

export class FillBody {
  private chunks: Buffer[] = [];
  /** Chunks released before chunks[0]. */
  private released = 0;
  private heldBytes = 0;
  private readonly cursors = new Set<Cursor>();
  private readerWaits: (() => void)[] = [];
  private roomWaits: (() => void)[] = [];
  /** Bytes received so far. */
  received = 0;
  state: 'body' | 'done' | 'failed' = 'body';
  error: Error | undefined;

  /**
   * @param keep hold every chunk (the body goes to RAM whole at the end)
   * @param windowBytes what a body not kept may hold ahead of its slowest reader
   */
  /** The kept body's bytes when its size is known: chunks are copied in and handed out as views of it, so it is allocated once. */
  private arena: Buffer | undefined;

  constructor(
    private keep: boolean,
    private readonly windowBytes = FILL_WINDOW_BYTES,
    size?: number,
  ) {
    if (keep && size !== undefined && size > 0) this.arena = Buffer.allocUnsafeSlow(size);
  }

  get keeping(): boolean {
    return this.keep;
  }

  /** Readers attached now. */
  get readers(): number {
    return this.cursors.size;
  }

  /** Whether a new reader can still start from byte 0. */
  get joinable(): boolean {
    return this.released === 0 && this.state !== 'failed';
  }

  // ---- producer --------------------------------------------------------------------------
  push(chunk: Buffer): void {
    const arena = this.arena;
    if (arena !== undefined && this.received + chunk.length <= arena.length) {
      chunk.copy(arena, this.received);
      chunk = arena.subarray(this.received, this.received + chunk.length);
    }
    this.chunks.push(chunk);
    this.heldBytes += chunk.length;
    this.received += chunk.length;
    if (!this.keep) this.release();
    this.wakeReaders();
  }

  /** Resolves when the producer may read on: at once while keeping, else once readers took enough. */
  room(): Promise<void> {
    if (this.keep || this.heldBytes <= this.windowBytes || this.state !== 'body') return Promise.resolve();
    return new Promise((r) => this.roomWaits.push(r));
  }

  /** The body will not be kept after all (it grew past what RAM takes): hold only the window from now on. */
  stopKeeping(): void {
    this.keep = false;
    this.arena = undefined;
    this.release();
  }

  /** The whole body (only while keeping). */
  whole(): Buffer {
    if (this.arena !== undefined && this.received === this.arena.length) return this.arena;
    return this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.heldBytes);
  }

  /** Every byte arrived and checked out: readers finish their responses. */
  end(): void {
    this.state = 'done';
    this.wakeReaders();
    this.wakeRoom();
  }

  /** The body is not to be trusted (upstream broke, hash mismatch): readers abort their responses. */
  fail(err: Error): void {
    if (this.state !== 'body') return;
    this.state = 'failed';
    this.error = err;
    this.chunks = [];
    this.heldBytes = 0;
    this.wakeReaders();
    this.wakeRoom();
  }

  // ---- readers ---------------------------------------------------------------------------
  /**
   * A place at byte 0, held from now: chunks that arrive before the reader starts piping are kept
   * for it. Pass it to pipe(), or give it back with leave().
   */
  reserve(): Cursor {
    const c: Cursor = { next: this.released };
    this.cursors.add(c);
    return c;
  }

  leave(c: Cursor): void {
    this.cursors.delete(c);
    if (!this.keep) this.release();
  }

  /**
   * Writes the body (or `span` of it) to `res` as it arrives and ends it once the whole body has
   * arrived and checked out; destroys it if the fill fails, so the client sees a body cut short of
   * its Content-Length. A range is not ended before the fill is over either: its bytes are only
   * known good then. Resolves true when the response was ended whole.
   */
  async pipe(res: ServerResponse, c: Cursor, span?: ByteSpan): Promise<boolean> {
    // Byte offset of chunk `c.next`, and how much of it is written.
    let offset = 0;
    let sent = 0;
    try {
      for (;;) {
        if (res.destroyed) return false;
        if (this.state === 'failed') {
          res.destroy(this.error);
          return false;
        }
        const i = c.next - this.released;
        if (i < this.chunks.length) {
          const chunk = this.chunks[i]!;
          // The body's last byte waits for the verdict: sent before it, a bad body would reach
          // the client whole, its Content-Length met, and look complete.
          const open = i === this.chunks.length - 1 && this.state !== 'done';
          const upto = open ? chunk.length - 1 : chunk.length;
          let piece: Buffer | undefined;
          if (upto > sent) {
            const s = span === undefined ? sent : Math.max(span.start - offset, sent);
            const e = span === undefined ? upto : Math.min(span.end + 1 - offset, upto);
            if (s < e) piece = s === 0 && e === chunk.length ? chunk : chunk.subarray(s, e);
            sent = upto;
          }
          if (!open) {
            c.next++;
            offset += chunk.length;
            sent = 0;
            if (!this.keep) this.release();
          }
          if (piece !== undefined && !res.write(piece)) await drained(res);
          else if (open) await new Promise<void>((r) => this.readerWaits.push(r));
          continue;
        }
        if (this.state === 'done') {
          res.end();
          return true;
        }
        await new Promise<void>((r) => this.readerWaits.push(r));
      }
    } finally {
      this.leave(c);
    }
  }

  /** Drops the chunks every reader has taken; wakes the producer when under the window again. */
  private release(): void {
    let min = this.released + this.chunks.length;
    for (const c of this.cursors) if (c.next < min) min = c.next;
    const n = min - this.released;
    if (n > 0) {
      for (let i = 0; i < n; i++) this.heldBytes -= this.chunks[i]!.length;
      this.chunks.splice(0, n);
      this.released = min;
    }
    if (this.heldBytes <= this.windowBytes) this.wakeRoom();
  }

  private wakeReaders(): void {
    if (this.readerWaits.length > 0) for (const r of this.readerWaits.splice(0)) r();
  }

  private wakeRoom(): void {
    if (this.roomWaits.length > 0) for (const r of this.roomWaits.splice(0)) r();
  }
}

/** Resolves when `res` can take more, or is gone. */
export function drained(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

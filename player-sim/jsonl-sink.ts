import { createWriteStream, mkdirSync, type WriteStream } from 'node:fs';
import { dirname } from 'node:path';
import type { EventSink, QoeEvent } from '../telemetry/events.ts';

/**
 * QoE events as JSON lines in a file (what `ocdn play` writes without --brokers). Lines are
 * batched into large writes; the order of lines is the order of send() calls, which in
 * virtual mode is deterministic, so the file is byte-identical across runs with one seed.
 */
export class JsonLinesFileSink implements EventSink {
  private readonly out: WriteStream;
  private pending: string[] = [];
  private pendingBytes = 0;
  private failed: Error | undefined;
  count = 0;

  constructor(
    readonly path: string,
    private readonly batchBytes = 256 * 1024,
  ) {
    mkdirSync(dirname(path), { recursive: true });
    this.out = createWriteStream(path, { flags: 'w' });
    this.out.on('error', (err) => (this.failed = err));
  }

  send(event: QoeEvent): void {
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
    this.pending = [];
    this.pendingBytes = 0;
    return this.out.write(chunk);
  }

  async flush(): Promise<void> {
    if (this.failed) throw this.failed;
    if (!this.writePending()) await new Promise<void>((resolve) => this.out.once('drain', resolve));
  }

  async close(): Promise<void> {
    this.writePending();
    await new Promise<void>((resolve, reject) => this.out.end((err?: Error | null) => (err ? reject(err) : resolve())));
    if (this.failed) throw this.failed;
  }
}

/** Keeps events in memory (tests, the library API). */
export class MemorySink implements EventSink {
  readonly events: QoeEvent[] = [];
  send(event: QoeEvent): void {
    this.events.push(event);
  }
  async flush(): Promise<void> {}
  async close(): Promise<void> {}
}

/** Discards events (benchmarks that only want the summary). */
export class NullSink implements EventSink {
  count = 0;
  send(): void {
    this.count++;
  }
  async flush(): Promise<void> {}
  async close(): Promise<void> {}
}

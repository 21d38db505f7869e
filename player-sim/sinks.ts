import type { EventSink, QoeEvent } from '../telemetry/events.ts';

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

import type { Logger } from './log.ts';

type Hook = { name: string; order: number; fn: () => Promise<void> | void };

/**
 * Ordered graceful shutdown. Hooks run by ascending `order` (stop accepting → drain → flush
 * → close clients), each bounded by a timeout so one stuck dependency cannot hang the exit.
 * Used by every server process; libraries used in-process (tests) call `run()` themselves.
 */
export class Shutdown {
  private hooks: Hook[] = [];
  private running: Promise<void> | undefined;
  private readonly log: Logger | undefined;
  private readonly hookTimeoutMs: number;

  constructor(opts: { log?: Logger; hookTimeoutMs?: number } = {}) {
    this.log = opts.log;
    this.hookTimeoutMs = opts.hookTimeoutMs ?? 10_000;
  }

  add(name: string, fn: () => Promise<void> | void, order = 50): this {
    this.hooks.push({ name, order, fn });
    return this;
  }

  get started(): boolean {
    return this.running !== undefined;
  }

  /** Runs every hook once, even when called again or concurrently. */
  run(reason = 'shutdown'): Promise<void> {
    this.running ??= this.runHooks(reason);
    return this.running;
  }

  private async runHooks(reason: string): Promise<void> {
    this.log?.info({ reason }, 'shutting down');
    const hooks = [...this.hooks].sort((a, b) => a.order - b.order);
    for (const hook of hooks) {
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          Promise.resolve().then(hook.fn),
          new Promise<void>((_, reject) => {
            timer = setTimeout(() => reject(new Error(`timed out after ${this.hookTimeoutMs} ms`)), this.hookTimeoutMs);
            timer.unref();
          }),
        ]);
        this.log?.debug({ hook: hook.name }, 'shutdown hook done');
      } catch (err) {
        this.log?.warn({ hook: hook.name, err: err instanceof Error ? err.message : String(err) }, 'shutdown hook failed');
      } finally {
        if (timer) clearTimeout(timer);
      }
    }
    this.log?.info('shutdown complete');
  }

  /**
   * For a process entry point: SIGTERM/SIGINT run the hooks then exit 0; a second signal
   * exits at once (the user really means it).
   */
  installSignalHandlers(exit: (code: number) => void = (c) => process.exit(c)): void {
    let signals = 0;
    const onSignal = (sig: NodeJS.Signals) => {
      signals++;
      if (signals > 1) {
        this.log?.warn({ signal: sig }, 'second signal, exiting now');
        exit(130);
        return;
      }
      void this.run(sig).then(() => exit(0));
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  }
}

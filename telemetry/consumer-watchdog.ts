/**
 * Keeps a kafkajs consumer reading. kafkajs restarts a consumer after most failures, but not
 * after one it deems non-retriable, and a consumer can also come back from a broker restart
 * joined yet reading nothing. Either way the aggregates freeze while the topic fills. The
 * watchdog is told, every few seconds, whether the consumer is behind the topic's end and where
 * it reads; when it has been behind without moving for `recoverMs`, or crashed for good, it stops
 * the consumer and runs it again (which leaves the group and joins it afresh).
 */
import type { Consumer } from 'kafkajs';
import { describeError } from '../common/errors.ts';
import type { Logger } from '../common/log.ts';
import { Backoff } from '../common/retry.ts';

export interface WatchdogOptions {
  /** Names the consumer in logs and in the restart counter. */
  name: string;
  consumer: Consumer;
  /** Runs the consumer (its `consumer.run({...})`); called again for every restart. */
  run: () => Promise<void>;
  /** Behind and not moving for this long: restart. */
  recoverMs: number;
  log: Logger;
  onRestart?: (reason: string) => void;
  isClosing: () => boolean;
}

export interface ConsumerWatchdog {
  /**
   * One observation: `behind` when the topic holds messages past what the consumer read;
   * `position` any string that changes whenever the consumer reads (its offsets).
   */
  observe(behind: boolean, position: string, now?: number): void;
  /** The crash kafkajs will not restart from, until a restart succeeds. */
  crashed(): string | undefined;
  /** For /healthz: how long it has been behind without moving (0 when reading or caught up), and the restarts so far. */
  state(now?: number): { stuckMs: number; restarts: number };
}

export function watchConsumer(o: WatchdogOptions): ConsumerWatchdog {
  let lastPosition: string | undefined;
  let movedAt = Date.now();
  let restarting = false;
  let crashed: string | undefined;
  let restarts = 0;
  const backoff = new Backoff({ baseMs: 1_000, maxMs: 15_000 });

  const restart = (reason: string) => {
    if (restarting || o.isClosing()) return;
    restarting = true;
    restarts++;
    o.onRestart?.(reason);
    o.log.warn({ consumer: o.name, reason }, 'restarting the consumer');
    void (async () => {
      try {
        await o.consumer.stop().catch(() => undefined);
        if (o.isClosing()) return;
        await o.run();
        crashed = undefined;
        backoff.reset();
      } catch (err) {
        o.log.error({ consumer: o.name, err: describeError(err) }, 'consumer restart failed; the watchdog tries again');
        scheduleRetry(`restart failed: ${describeError(err)}`);
      } finally {
        // A fresh join gets the whole recovery time again.
        movedAt = Date.now();
        restarting = false;
      }
    })();
  };

  const scheduleRetry = (reason: string) => {
    setTimeout(() => restart(reason), backoff.next()).unref();
  };

  o.consumer.on(o.consumer.events.CRASH, (e) => {
    const msg = describeError(e.payload.error);
    if (e.payload.restart) {
      o.log.warn({ consumer: o.name, err: msg }, 'consumer crashed; kafkajs restarts it');
      return;
    }
    crashed = msg;
    o.log.error({ consumer: o.name, err: msg }, 'consumer crashed and kafkajs will not restart it; the watchdog does');
    scheduleRetry(`crashed: ${msg}`);
  });

  return {
    observe(behind, position, now = Date.now()) {
      if (!behind || position !== lastPosition) {
        lastPosition = position;
        movedAt = now;
        return;
      }
      if (now - movedAt >= o.recoverMs) restart(`behind the topic's end and read nothing for ${Math.round((now - movedAt) / 1000)} s`);
    },
    crashed: () => crashed,
    state: (now = Date.now()) => ({ stuckMs: restarting || lastPosition === undefined ? 0 : Math.max(0, now - movedAt), restarts }),
  };
}

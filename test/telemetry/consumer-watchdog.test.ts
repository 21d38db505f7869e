/**
 * The consumer watchdog on the real broker: a consumer joined to its group but reading nothing
 * (paused, as one can come back from a broker restart) is restarted once it has been behind the
 * topic's end without moving for recoverMs, and then reads what waited; one that reads is left alone.
 */
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { waitFor } from '../../common/http.ts';
import { createLogger } from '../../common/log.ts';
import { watchConsumer, type ConsumerWatchdog } from '../../telemetry/consumer-watchdog.ts';
import { createKafka } from '../../telemetry/kafka.ts';
import { brokers, freshTopics } from './helpers.ts';

const quiet = createLogger('test', { level: 'silent' });

describe('consumer watchdog', () => {
  const cleanup: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const f of cleanup.splice(0).reverse()) await f().catch(() => undefined);
  });

  /** A consumer on a fresh one-topic set with a watchdog, fed observations the way the aggregator makes them. */
  async function setup(recoverMs: number) {
    const topic = (await freshTopics('watchdog')).events;
    const kafka = createKafka({ brokers: brokers().split(','), clientId: 'test-watchdog', log: quiet });
    const producer = kafka.producer();
    const admin = kafka.admin();
    const consumer = kafka.consumer({ groupId: `test-watchdog-${randomBytes(4).toString('hex')}`, maxWaitTimeInMs: 100 });
    await Promise.all([producer.connect(), admin.connect(), consumer.connect()]);
    cleanup.push(
      () => producer.disconnect(),
      () => admin.disconnect(),
      () => consumer.disconnect(),
    );
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    const next = new Map<number, number>();
    let read = 0;
    const run = () =>
      consumer.run({
        eachMessage: async ({ partition, message }) => {
          next.set(partition, Number(message.offset) + 1);
          read++;
        },
      });
    let closing = false;
    cleanup.push(async () => void (closing = true));
    const restarts: string[] = [];
    const dog: ConsumerWatchdog = watchConsumer({
      name: 'test',
      consumer,
      run,
      recoverMs,
      log: quiet,
      isClosing: () => closing,
      onRestart: (r) => restarts.push(r),
    });
    const observe = async () => {
      const ends = await admin.fetchTopicOffsets(topic);
      const behind = ends.some((o) => Number(o.high) > (next.get(o.partition) ?? Number(o.low)));
      dog.observe(behind, ends.map((o) => `${o.partition}:${next.get(o.partition) ?? o.low}`).join(','));
    };
    const produce = (n: number) => producer.send({ topic, messages: Array.from({ length: n }, (_, i) => ({ key: `k${i}`, value: String(i) })) });
    await run();
    return { topic, consumer, dog, observe, produce, restarts, read: () => read };
  }

  it('restarts a consumer that is joined but reads nothing while its topic fills, and it then reads what waited', async () => {
    const t = await setup(3_000);
    await t.produce(5);
    await waitFor(() => t.read() >= 5, { timeoutMs: 30_000, what: 'the first 5 messages read' });
    t.consumer.pause([{ topic: t.topic }]);
    await t.produce(20);
    await waitFor(
      async () => {
        await t.observe();
        return t.restarts.length > 0;
      },
      { timeoutMs: 30_000, intervalMs: 250, what: 'the watchdog to restart the stuck consumer' },
    );
    expect(t.restarts[0]).toMatch(/behind the topic's end and read nothing for \d+ s/);
    await waitFor(() => t.read() >= 25, { timeoutMs: 30_000, what: `all 25 messages read after the restart (have ${t.read()})` });
    expect(t.dog.state().restarts).toBe(1);
  }, 90_000);

  it('leaves a consumer alone while it reads, however long the topic keeps it busy', async () => {
    const t = await setup(1_500);
    const until = Date.now() + 5_000;
    let sent = 0;
    while (Date.now() < until) {
      await t.produce(10);
      sent += 10;
      await waitFor(() => t.read() >= sent, { timeoutMs: 30_000, what: `${sent} messages read` });
      await t.observe();
    }
    expect(t.restarts).toEqual([]);
  }, 90_000);
});

/**
 * The broker writes a produce request but its answer is lost (it died in between, or the
 * network did): the producer must neither lose the events nor stall. The events are replayed
 * from the spill file, packed differently from the first attempt; an idempotent kafkajs
 * producer would reuse the lost request's sequence numbers for different content, and the
 * broker would drop the replay as a "duplicate" or refuse it as out of order.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../common/http.ts';
import { createLogger } from '../../common/log.ts';
import { freePorts } from '../../common/ports.ts';
import { startKafka, type KafkaHandle } from '../../scripts/kafka.ts';
import { createKafka } from '../../telemetry/kafka.ts';
import type { TopicNames } from '../../telemetry/topics.ts';
import { createProducer, type KafkaEventProducer } from '../../telemetry/producer.ts';
import { ackedEmitter, freshTopics } from './helpers.ts';
import { startFaultProxy, type FaultProxy } from './kafka-fault-proxy.ts';

describe('produce answers lost after the broker wrote the batch', () => {
  let dir: string;
  let kafka: KafkaHandle;
  let proxy: FaultProxy;
  let topics: TopicNames;
  let prod: KafkaEventProducer;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ocdn-lost-answer-'));
    const [port, controllerPort] = await freePorts(2);
    proxy = await startFaultProxy(port!);
    kafka = await startKafka({
      dir: join(dir, 'kafka'),
      port: port!,
      controllerPort: controllerPort!,
      advertisedPort: proxy.port,
      log: createLogger('kafka', { level: 'silent' }),
      onProgress: () => undefined,
    });
    topics = await freshTopics('lost-answer', kafka.brokers);
    prod = createProducer({
      brokers: kafka.brokers,
      topic: topics.events,
      spillFile: join(dir, 'spill.jsonl'),
      lingerMs: 5,
      retryMs: 200,
      log: createLogger('producer', { level: 'silent' }),
    });
  });

  afterAll(async () => {
    await prod?.close();
    await kafka?.stop(20_000);
    await proxy?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('every acknowledged event is in the topic and the producer drains', { timeout: 240_000 }, async () => {
    const { acked, emit } = ackedEmitter(prod, 40);

    await emit(200);
    // A fresh broker on a busy machine may miss the very first request (the events then spill and
    // replay): the fault below needs the producer back in memory mode first.
    await waitFor(
      () => {
        const b = prod.backlog();
        return b.memory === 0 && b.spill === 0 && b.mode === 'memory';
      },
      { timeoutMs: 60_000, what: 'the producer to send from memory' },
    );

    proxy.loseProduceAnswers(true);
    await emit(200); // written by the broker, answers lost: acknowledged from the spill file
    await emit(100); // sent while spilling
    expect(proxy.lostAnswers).toBeGreaterThan(0);
    expect(prod.backlog().mode).toBe('spill');
    proxy.loseProduceAnswers(false);
    await emit(100);
    expect(await prod.drain(60_000)).toBe(true);
    expect(acked.size).toBe(600);

    const seen = new Set<string>();
    const consumer = createKafka({ brokers: [kafka.brokers], clientId: 'lost-answer-reader' }).consumer({
      groupId: `reader-${randomBytes(3).toString('hex')}`,
      maxWaitTimeInMs: 100,
    });
    await consumer.connect();
    try {
      await consumer.subscribe({ topics: [topics.events], fromBeginning: true });
      await consumer.run({
        eachMessage: async ({ message }) => {
          for (const line of (message.value?.toString() ?? '').split('\n')) seen.add((JSON.parse(line) as { id: string }).id);
        },
      });
      await waitFor(() => [...acked].every((id) => seen.has(id)), { timeoutMs: 60_000, what: 'every acknowledged event on the topic' }).catch(() => undefined);
    } finally {
      await consumer.disconnect();
    }
    expect([...acked].filter((id) => !seen.has(id))).toEqual([]);
  });
});

import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../common/http.ts';
import { createLogger } from '../../common/log.ts';
import { freePorts } from '../../common/ports.ts';
import { startKafka, type KafkaHandle } from '../../scripts/kafka.ts';
import { startAggregator, type AggregatorHandle } from '../../telemetry/aggregator.ts';
import { createProducer, type KafkaEventProducer } from '../../telemetry/producer.ts';
import { ackedEmitter, freshTopics, qoe } from './helpers.ts';

/**
 * Needs a broker of its own to stop and start (the shared one serves other files in parallel).
 */
describe('Kafka stopped mid-stream and restarted', () => {
  let dir: string;
  let ports: number[];
  let kafka: KafkaHandle;
  let agg: AggregatorHandle;
  let prod: KafkaEventProducer;
  const quiet = createLogger('kafka', { level: 'silent' });

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ocdn-restart-'));
    ports = await freePorts(2);
    kafka = await startKafka({ dir: join(dir, 'kafka'), port: ports[0]!, controllerPort: ports[1]!, log: quiet, onProgress: () => undefined });
    const topics = await freshTopics('restart', kafka.brokers);
    agg = await startAggregator({
      brokers: kafka.brokers,
      topics,
      port: 0,
      groupId: `g-${randomBytes(3).toString('hex')}`,
      windowMs: 10_000,
      graceMs: 2_000,
      idleMs: 3_000,
      provisionalMs: 200,
      tickMs: 100,
    });
    prod = createProducer({ brokers: kafka.brokers, topic: topics.events, spillFile: join(dir, 'spill.jsonl'), lingerMs: 5, retryMs: 300 });
  });

  afterAll(async () => {
    await prod?.close();
    await agg?.close();
    await kafka?.stop(20_000);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('every acknowledged event reaches the aggregates (0 lost), the outage spilled to disk and replayed', { timeout: 300_000 }, async () => {
    const { acked, emit } = ackedEmitter(prod, 25);

    await emit(300);
    expect(prod.backlog()).toMatchObject({ memory: 0, spill: 0, mode: 'memory' });

    await kafka.stop(30_000);
    await emit(300); // acknowledged once they are fsync'd to the spill file
    expect(acked.size).toBe(600);
    const backlog = prod.backlog();
    expect(backlog.mode).toBe('spill');
    expect(backlog.spill).toBe(300);
    expect(readFileSync(join(dir, 'spill.jsonl'), 'utf8').trim().split('\n')).toHaveLength(300);

    kafka = await startKafka({ dir: join(dir, 'kafka'), port: ports[0]!, controllerPort: ports[1]!, log: quiet, onProgress: () => undefined });
    await emit(300);
    expect(await prod.drain(120_000)).toBe(true);
    expect(prod.backlog()).toMatchObject({ memory: 0, spill: 0, mode: 'memory' });
    expect(existsSync(join(dir, 'spill.jsonl')) ? readFileSync(join(dir, 'spill.jsonl'), 'utf8') : '').toBe('');

    const total = await waitFor(
      async () => {
        const r = await qoe(agg.url, { by: 'all', window: '10s' });
        const t = r.totals[0];
        return t && t.events + t.late >= acked.size ? t : undefined;
      },
      { timeoutMs: 120_000, intervalMs: 250, what: `all ${acked.size} acknowledged events in the aggregates` },
    );
    expect(total.events).toBe(acked.size);
    expect(total.late).toBe(0);
  });
});

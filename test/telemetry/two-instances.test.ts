import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../common/http.ts';
import { startAggregator, type AggregatorHandle } from '../../telemetry/aggregator.ts';
import { DIMENSIONS } from '../../telemetry/merge.ts';
import { createProducer, type KafkaEventProducer } from '../../telemetry/producer.ts';
import type { QoeResult } from '../../telemetry/view.ts';
import { brokers, dataset, EXPECTED, freshTopics, produceDataset, qoe, settled, T0_EVENT_TIME } from './helpers.ts';

const WINDOW = { windowMs: 10_000, graceMs: 1_000, idleMs: 2_000, provisionalMs: 200, tickMs: 100 };
const strip = (r: QoeResult) => ({ ...r, generatedAt: 0 });

describe('two aggregator instances in one consumer group', () => {
  let a: AggregatorHandle;
  let b: AggregatorHandle;
  let prod: KafkaEventProducer;
  let spillDir: string;

  beforeAll(async () => {
    const topics = await freshTopics('two');
    const groupId = `g2-${randomBytes(4).toString('hex')}`;
    spillDir = await mkdtemp(join(tmpdir(), 'ocdn-spill-'));
    a = await startAggregator({ brokers: brokers(), topics, port: 0, groupId, ...WINDOW, eventTime: T0_EVENT_TIME });
    b = await startAggregator({ brokers: brokers(), topics, port: 0, groupId, ...WINDOW, eventTime: T0_EVENT_TIME });
    // Both members must own partitions before anything is produced, so each aggregates a share.
    await waitFor(() => a.assigned().length > 0 && b.assigned().length > 0 && a.assigned().length + b.assigned().length === 6, {
      timeoutMs: 60_000,
      what: 'the group to split the 6 partitions between both instances',
    });
    prod = createProducer({ brokers: brokers(), topic: topics.events, spillFile: join(spillDir, 'p.jsonl'), lingerMs: 5 });
    await produceDataset(prod, dataset());
    await Promise.all([settled(a.url), settled(b.url)]);
  });

  afterAll(async () => {
    await prod?.close();
    await Promise.all([a?.close(), b?.close()]);
    if (spillDir) await rm(spillDir, { recursive: true, force: true });
  });

  it('splits the partitions and both answer with the same merged aggregates', async () => {
    const pa = a.assigned();
    const pb = b.assigned();
    expect(pa.filter((p) => pb.includes(p))).toEqual([]);
    expect([...pa, ...pb].sort()).toEqual([0, 1, 2, 3, 4, 5]);
    for (const by of DIMENSIONS) {
      const [ra, rb] = await Promise.all([qoe(a.url, { by, window: '10s' }), qoe(b.url, { by, window: '10s' })]);
      expect(strip(ra), by).toEqual(strip(rb));
    }
  });

  it('and those merged aggregates are the single-instance, hand-computed ones', async () => {
    const r = await qoe(a.url, { by: 'all', window: '10s' });
    const t = r.totals[0]!;
    expect(t.events).toBe(EXPECTED.all.events);
    expect(t.duplicates).toBe(EXPECTED.all.duplicates);
    expect(t.late).toBe(EXPECTED.all.late);
    expect(t.sessions).toBe(EXPECTED.all.sessions);
    expect(t.rebufferRatio).toBeCloseTo(EXPECTED.all.rebufferRatio, 12);
    // Both instances contributed partials: the answer merges partitions from each.
    const stats = [a.stats(), b.stats()].map((s) => Object.values(s).reduce((n, x) => n + x.added, 0));
    expect(stats[0]).toBeGreaterThan(0);
    expect(stats[1]).toBeGreaterThan(0);
    expect(stats[0]! + stats[1]!).toBe(EXPECTED.all.events);
  });
});

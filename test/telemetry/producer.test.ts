import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isOcdnError } from '../../common/errors.ts';
import { createRegistry, readMetric } from '../../common/metrics.ts';
import { freePorts } from '../../common/ports.ts';
import type { QoeEvent } from '../../telemetry/events.ts';
import { partitionFor } from '../../telemetry/partitioner.ts';
import { createProducer, JsonLinesSink } from '../../telemetry/producer.ts';
import { brokers, freshTopics, readTopic } from './helpers.ts';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ocdn-producer-'));
});
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

function events(sessionId: string, n: number): QoeEvent[] {
  return Array.from(
    { length: n },
    (_, seq) =>
      ({
        v: 1,
        id: randomUUID(),
        type: 'heartbeat',
        ts: 1_700_000_000_000 + seq,
        sessionId,
        seq,
        title: 't',
        edgeId: 'e1',
        region: 'eu',
        isp: 'i',
        device: 'tv',
        abr: 'bba',
        bufferS: 1,
        rendition: 'r',
        bitrate: 1,
        playedS: seq,
      }) as QoeEvent,
  );
}

describe('Kafka producer', () => {
  it('spills to a JSON-lines file while no broker answers, and a later producer replays it in order', async () => {
    const [deadPort] = await freePorts(1);
    const spillFile = join(dir, 'offline.jsonl');
    const registry = createRegistry();
    const offline = createProducer({ brokers: `127.0.0.1:${deadPort}`, spillFile, lingerMs: 5, retryMs: 60_000, closeTimeoutMs: 200, registry });
    const evs = events('sess-offline', 50);
    await Promise.all(evs.map((e) => offline.send(e)));
    expect(offline.backlog()).toMatchObject({ memory: 0, spill: 50, mode: 'spill' });
    expect(readMetric(await registry.metrics(), 'ocdn_telemetry_producer_backlog_events', { where: 'spill' })).toBe(50);
    await offline.close();
    const lines = readFileSync(spillFile, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as QoeEvent);
    expect(lines.map((e) => e.seq)).toEqual(evs.map((e) => e.seq));

    const topics = await freshTopics('spill');
    const online = createProducer({ brokers: brokers(), topic: topics.events, spillFile, lingerMs: 5 });
    expect(await online.drain(60_000)).toBe(true);
    await online.close();
    const got = await readTopic(topics.events, 50);
    expect(got).toHaveLength(50);
    // One session, one partition: the one a message keyed by its sessionId would go to.
    expect(new Set(got.map((m) => m.partition))).toEqual(new Set([partitionFor('sess-offline', 6)]));
    expect(got.map((m) => (JSON.parse(m.value) as QoeEvent).seq)).toEqual(evs.map((e) => e.seq));
    expect(existsSync(spillFile)).toBe(false);
  });

  it('keeps order and loses nothing when the in-memory queue overflows to disk', async () => {
    const topics = await freshTopics('overflow');
    // The plain wire form here (one event per message, key = sessionId); the other tests pack.
    const p = createProducer({
      brokers: brokers(),
      topic: topics.events,
      spillFile: join(dir, 'overflow.jsonl'),
      maxQueue: 20,
      batchSize: 10,
      lingerMs: 1,
      eventsPerMessage: 1,
    });
    const evs = events('sess-overflow', 400);
    for (const e of evs) void p.send(e);
    expect(await p.drain(60_000)).toBe(true);
    await p.close();
    const got = await readTopic(topics.events, 400);
    expect(got.every((m) => m.key === 'sess-overflow')).toBe(true);
    expect(got.map((m) => (JSON.parse(m.value) as QoeEvent).seq)).toEqual(evs.map((e) => e.seq));
  });

  it('refuses bad input clearly instead of sending it', async () => {
    const topics = await freshTopics('refuse');
    const p = createProducer({ brokers: brokers(), topic: topics.events, spillFile: join(dir, 'refuse.jsonl'), validate: true });
    try {
      expect(() => p.send({ ...events('s', 1)[0]!, ts: 'yesterday' } as unknown as QoeEvent)).toThrow(/ts must be number/);
      expect(() => p.sendRaw('{"a":1}\n{"b":2}')).toThrow(/single line/);
      await p.send(events('s', 1)[0]!);
      await p.close();
      await expect(p.send(events('s', 1)[0]!)).rejects.toSatisfy((err: unknown) => isOcdnError(err, 'E_USAGE'));
    } finally {
      await p.close();
    }
  });
});

describe('JsonLinesSink', () => {
  it('writes one JSON object per line and keeps them through close', async () => {
    const file = join(dir, 'sub', 'events.jsonl');
    const sink = new JsonLinesSink(file);
    const evs = events('sess-file', 3);
    for (const e of evs) await sink.send(e);
    await sink.flush();
    await sink.close();
    const back = readFileSync(file, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as QoeEvent);
    expect(back).toEqual(evs);
    expect(() => sink.send(evs[0]!)).toThrow(/closed/);
  });
});

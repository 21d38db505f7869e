/**
 * The QoE feedback loop with its real parts: events through the Kafka broker into a running
 * aggregator, steering polling the aggregator's per-edge totals, and the edge that rebuffers far
 * more than its peers demoted in real steering answers (reason `qoe-demoted`), then restored.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SteerResponse } from '../../common/contracts.ts';
import { waitFor } from '../../common/http.ts';
import { createLogger } from '../../common/log.ts';
import { startQoeFeedback } from '../../steering/qoe-feedback.ts';
import { startSteering, type Steering } from '../../steering/server.ts';
import { startAggregator, type AggregatorHandle } from '../../telemetry/aggregator.ts';
import type { QoeEvent } from '../../telemetry/events.ts';
import { createProducer, type KafkaEventProducer } from '../../telemetry/producer.ts';
import { heartbeat, testCatalog, TEST_EDGE_KEY } from '../steering/helpers.ts';
import { brokers, freshTopics } from './helpers.ts';

const EDGES = ['edge-1', 'edge-2', 'edge-3'];

describe('QoE feedback from the aggregator to steering', () => {
  let dir: string;
  let agg: AggregatorHandle;
  let prod: KafkaEventProducer;
  let st: Steering;
  const quiet = createLogger('test', { level: 'silent' });

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ocdn-feedback-'));
    const topics = await freshTopics('feedback');
    agg = await startAggregator({
      brokers: brokers(),
      topics,
      port: 0,
      groupId: `g-${randomBytes(3).toString('hex')}`,
      windowMs: 10_000,
      graceMs: 1_000,
      provisionalMs: 200,
      tickMs: 100,
      log: quiet,
    });
    prod = createProducer({ brokers: brokers(), topic: topics.events, spillFile: join(dir, 'spill.jsonl'), lingerMs: 5, log: quiet });
    st = await startSteering({
      edgeKey: TEST_EDGE_KEY,
      port: 0,
      tokenSecret: null,
      catalog: testCatalog(30),
      registry: { probeIntervalMs: 0, rise: 1, heartbeatIntervalMs: 60_000 },
      log: quiet,
    });
    for (const [i, id] of EDGES.entries()) st.registry.heartbeat(heartbeat({ id, region: 'us-east', url: `http://127.0.0.1:${9201 + i}` }));
  });

  afterAll(async () => {
    await prod?.close();
    await agg?.close();
    await st?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const sessionEnd = (edgeId: string, playedS: number, stalledS: number): QoeEvent =>
    ({
      v: 1,
      id: randomUUID(),
      type: 'session_end',
      ts: Date.now(),
      sessionId: randomUUID(),
      seq: 0,
      title: 'title-0001',
      edgeId,
      region: 'us-east',
      isp: 'isp',
      device: 'tv',
      abr: 'bola',
      playedS,
      stalledS,
      avgBitrate: 3e6,
      switches: 1,
      started: true,
      exitReason: 'completed',
      bytes: 1e6,
    }) as QoeEvent;

  const firstEdges = async () => {
    const out: { first: string; reasons: Map<string, string> }[] = [];
    for (const t of testCatalog(30).titles) {
      const r = (await (await fetch(`${st.url}/v1/steer?title=${t.id}&region=us-east`)).json()) as SteerResponse;
      out.push({ first: r.edges[0]!.id, reasons: new Map(r.edges.map((e) => [e.id, e.reason])) });
    }
    return out;
  };

  it('demotes the edge far above its peers in rebuffering, and only it', async () => {
    const before = await firstEdges();
    expect(before.some((d) => d.first === 'edge-3')).toBe(true); // it wins some titles while healthy

    // edge-3's sessions stall 30% of the time, its peers' under 2%.
    for (let i = 0; i < 5; i++) {
      await prod.send(sessionEnd('edge-1', 100, 1));
      await prod.send(sessionEnd('edge-2', 100, 2));
      await prod.send(sessionEnd('edge-3', 100, 43));
    }
    await prod.flush();
    const feedback = startQoeFeedback({ aggregatorUrl: agg.url, registry: st.registry, intervalMs: 60_000, lastMs: 300_000 });
    try {
      const decisions = await waitFor(
        async () => {
          const d = await feedback.tick();
          return d.length === 3 ? d : undefined;
        },
        { timeoutMs: 30_000, intervalMs: 250, what: 'the aggregator to show all three edges' },
      );
      expect(decisions.filter((d) => d.demoted).map((d) => d.id)).toEqual(['edge-3']);

      const after = await firstEdges();
      expect(after.some((d) => d.first === 'edge-3')).toBe(false);
      for (const d of after) expect(d.reasons.get('edge-3')).toMatch(/qoe-demoted/);
      const metrics = await (await fetch(`${st.url}/metrics`)).text();
      expect(metrics).toMatch(/ocdn_steering_decisions_total\{policy="hrw-bounded",reason="[^"]*hash"\}/);

      // Once its sessions are as good as the others', it is restored.
      for (let i = 0; i < 80; i++) await prod.send(sessionEnd('edge-3', 100, 0));
      await prod.flush();
      await waitFor(async () => (await feedback.tick()).find((d) => d.id === 'edge-3')?.demoted === false, {
        timeoutMs: 30_000,
        intervalMs: 250,
        what: 'edge-3 restored',
      });
      expect((await firstEdges()).some((d) => d.first === 'edge-3')).toBe(true);
    } finally {
      feedback.stop();
    }
  });
});

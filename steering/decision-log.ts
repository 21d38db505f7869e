/**
 * Steering decisions on Kafka (`ocdn.steering.decisions.v1`, issue 15): one SteeringDecision
 * per answer of /v1/steer, /v1/play and the content-steering manifest, so the aggregator can
 * tell why a byte missed. Records go through the same spilling producer as the QoE events
 * (telemetry/producer.ts), keyed by session so a session's decisions and accesses share a
 * partition number; publishing never waits and never fails a decision.
 */
import type { Registry } from 'prom-client';
import type { SkipReason, SteeringDecision } from '../common/contracts.ts';
import { describeError } from '../common/errors.ts';
import type { Logger } from '../common/log.ts';
import { topicNames } from '../telemetry/topics.ts';
import { createProducer, type KafkaEventProducer } from '../telemetry/producer.ts';
import type { EdgeView, RankedEdge } from './policies.ts';

const MAX_RANKED = 64;
const MAX_SKIPPED = 256;

/** The record of one decision: the ranking as given, and the edges passed over with the reason. */
export function decisionRecord(o: {
  sessionId: string;
  title: string;
  site: string;
  ranked: readonly RankedEdge[];
  /** Edges ranked but cut from the answer (maxEdges). */
  cut?: readonly RankedEdge[];
  /** Registered edges that are out. */
  unhealthy: readonly EdgeView[];
  ts: number;
}): SteeringDecision {
  const ranked: SteeringDecision['ranked'] = [];
  const skipped: SteeringDecision['skipped'] = [];
  const skip = (e: EdgeView, why: SkipReason) => {
    if (skipped.length < MAX_SKIPPED) skipped.push({ edge: e.id, site: e.region, why });
  };
  for (let i = 0; i < o.ranked.length && i < MAX_RANKED; i++) {
    const r = o.ranked[i]!;
    ranked.push({ edge: r.edge.id, site: r.edge.region });
    // The first-ranked edge was chosen, whatever its state; the ones behind it for load or QoE were passed over.
    if (i > 0 && r.edge.region === o.site) {
      if (r.reason.endsWith('overload-skip')) skip(r.edge, 'overloaded');
      else if (r.reason.endsWith('qoe-demoted')) skip(r.edge, 'qoe-demoted');
    }
  }
  for (const e of o.unhealthy) skip(e, 'unhealthy');
  for (const r of o.cut ?? []) if (r.edge.region !== o.site) skip(r.edge, 'not-in-site');
  return { sessionId: o.sessionId, title: o.title, site: o.site, ts: o.ts, ranked, skipped };
}

export interface DecisionLog {
  publish(d: SteeringDecision): void;
  /** Sends what is queued (or leaves it in the spill file) and stops. */
  close(): Promise<void>;
}

/**
 * The decision publisher when Kafka brokers are given, else undefined (and one log line saying
 * decisions are not published).
 */
export function createDecisionLog(o: {
  brokers: string | undefined;
  topicPrefix?: string;
  spillFile?: string;
  log: Logger;
  registry?: Registry;
}): DecisionLog | undefined {
  if (o.brokers === undefined || o.brokers === '') {
    o.log.info('no Kafka brokers (--brokers, KAFKA_BROKERS): steering decisions are not published, so misses cannot be classified');
    return undefined;
  }
  const topic = topicNames(o.topicPrefix).decisions;
  const producer: KafkaEventProducer = createProducer({
    brokers: o.brokers,
    topic,
    clientId: 'ocdn-steering-decisions',
    ...(o.spillFile ? { spillFile: o.spillFile } : {}),
    log: o.log.child({ part: 'decisions' }),
    registry: o.registry,
  });
  o.log.info({ topic, brokers: o.brokers }, 'publishing steering decisions');
  let warned = false;
  return {
    publish(d) {
      // Resolves once in Kafka or the spill file; a refusal (queue and spill both full) is counted by the producer.
      producer.sendRaw(JSON.stringify(d), d.sessionId).catch((err: unknown) => {
        if (!warned) o.log.warn({ err: describeError(err) }, 'a steering decision could not be published (further failures are only counted)');
        warned = true;
      });
    },
    close: () => producer.close(),
  };
}

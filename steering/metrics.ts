import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { createRegistry } from '../common/metrics.ts';
import type { TitleCatalog } from './catalog.ts';
import type { SessionStore } from './content-steering.ts';
import type { EdgeRegistry } from './registry.ts';

/** Steering's Prometheus registry and the children the request path uses directly. */
export interface SteeringMetrics {
  registry: Registry;
  /** Counts one decision by policy and the reason of its first edge (or its refusal). */
  countDecision(policy: string, reason: string): void;
  heartbeatOk: { inc(): void };
  heartbeatInvalid: { inc(): void };
  /** Counts one heartbeat refused (unsigned, bad-signature, stale, replay, too-large, registry-full, …). */
  heartbeatRefused(reason: string): void;
  steerTimer: { observe(seconds: number): void };
}

export function createSteeringMetrics(opts: {
  registry: EdgeRegistry;
  catalog: TitleCatalog;
  sessions: SessionStore;
  defaultMetrics?: boolean | undefined;
}): SteeringMetrics {
  const { registry: edges, catalog, sessions } = opts;
  const registry = createRegistry({ defaultMetrics: opts.defaultMetrics });
  const decisions = new Counter({
    name: 'ocdn_steering_decisions_total',
    help: 'Steering decisions by policy and the reason of the first edge (or the refusal)',
    labelNames: ['policy', 'reason'],
    registers: [registry],
  });
  const decisionSeconds = new Histogram({
    name: 'ocdn_steering_decision_seconds',
    help: 'Time to rank and sign one answer',
    labelNames: ['endpoint'],
    buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05],
    registers: [registry],
  });
  const heartbeats = new Counter({ name: 'ocdn_steering_heartbeats_total', help: 'Edge heartbeats received', labelNames: ['result'], registers: [registry] });
  const refusals = new Counter({
    name: 'ocdn_steering_heartbeats_refused_total',
    help: 'Edge heartbeats refused, by reason (unsigned, malformed, bad-signature, stale, replay, id-mismatch, invalid, too-large, registry-full)',
    labelNames: ['reason'],
    registers: [registry],
  });
  const transitions = new Counter({
    name: 'ocdn_steering_edge_transitions_total',
    help: 'Edges going in or out',
    labelNames: ['state'],
    registers: [registry],
  });
  new Gauge({
    name: 'ocdn_steering_edges',
    help: 'Registered edges by state',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      const c = edges.counts();
      this.set({ state: 'up' }, c.up);
      this.set({ state: 'down' }, c.down);
    },
  });
  new Gauge({
    name: 'ocdn_steering_catalog_titles',
    help: 'Titles in the loaded catalog',
    registers: [registry],
    collect() {
      this.set(catalog.size);
    },
  });
  new Gauge({
    name: 'ocdn_steering_play_sessions',
    help: 'Live Content Steering sessions',
    registers: [registry],
    collect() {
      this.set(sessions.size);
    },
  });
  edges.onChange = (_id, state) => transitions.labels(state).inc();
  // labels() hashes its arguments on every call; the hot path keeps the children instead.
  const decisionChildren = new Map<string, { inc(): void }>();
  return {
    registry,
    countDecision(policy, reason) {
      const key = `${policy}\u0000${reason}`;
      let child = decisionChildren.get(key);
      if (!child) {
        child = decisions.labels(policy, reason);
        decisionChildren.set(key, child);
      }
      child.inc();
    },
    heartbeatOk: heartbeats.labels('ok'),
    heartbeatInvalid: heartbeats.labels('invalid'),
    heartbeatRefused: (reason) => refusals.labels(reason).inc(),
    steerTimer: decisionSeconds.labels('steer'),
  };
}

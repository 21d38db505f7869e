/**
 * The cluster view: steering's GET /v1/edges joined with each edge's own /metrics (hit ratio,
 * bytes), polled only while a page watches and pushed to every page as `event: cluster`.
 */
import type { ConsoleCluster, ConsoleEdge, EdgeList } from '../common/contracts.ts';
import { describeError } from '../common/errors.ts';
import { errorMessage } from '../common/http.ts';
import type { Logger } from '../common/log.ts';
import { readMetric } from '../common/metrics.ts';
import { SseGroup } from './sse.ts';

const SERVED = ['HIT', 'MISS', 'STALE', 'COALESCED'] as const;

export interface ClusterFeedOptions {
  steeringUrl: string;
  intervalMs: number;
  /** Per request to steering or an edge. */
  timeoutMs?: number;
  log: Logger;
  /** Counts each poll's outcome (steering answered or not). */
  onPoll?: (ok: boolean) => void;
}

async function getText(url: string, timeoutMs: number): Promise<string> {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  const text = await res.text();
  if (!res.ok) throw new Error(`${url} answered ${res.status}: ${errorMessage(text)}`);
  return text;
}

/** undici says "fetch failed" and puts the reason (ECONNREFUSED, a timeout) in the cause. */
const why = (err: unknown) => {
  const cause = (err as Error).cause as { code?: string; message?: string } | undefined;
  return cause?.code ?? cause?.message ?? describeError(err);
};

/** One snapshot of the cluster (also GET /api/cluster). */
export async function clusterSnapshot(steeringUrl: string, timeoutMs = 1_500): Promise<ConsoleCluster> {
  const generatedAt = Date.now();
  let list: EdgeList;
  try {
    list = JSON.parse(await getText(`${steeringUrl}/v1/edges`, timeoutMs)) as EdgeList;
  } catch (err) {
    return { generatedAt, steeringUrl, steeringError: `steering at ${steeringUrl}: ${why(err)}`, edges: [] };
  }
  const edges = await Promise.all(
    list.edges.map(async (e): Promise<ConsoleEdge> => {
      try {
        const text = await getText(`${e.url}/metrics`, timeoutMs);
        const hits = readMetric(text, 'ocdn_edge_requests_total', { cache: 'HIT' });
        const requests = SERVED.reduce((s, cache) => s + readMetric(text, 'ocdn_edge_requests_total', { cache }), 0);
        return {
          ...e,
          hitRatio: requests > 0 ? hits / requests : null,
          requests,
          bytesServed: readMetric(text, 'ocdn_edge_bytes_served_total'),
          originBytes: readMetric(text, 'ocdn_edge_origin_bytes_total'),
        };
      } catch (err) {
        return { ...e, hitRatio: null, requests: 0, bytesServed: 0, originBytes: 0, metricsError: why(err) };
      }
    }),
  );
  edges.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return { generatedAt, steeringUrl, edges };
}

export class ClusterFeed {
  readonly group: SseGroup;
  private timer: NodeJS.Timeout | undefined;
  private polling = false;

  constructor(private readonly o: ClusterFeedOptions) {
    this.group = new SseGroup({ onActive: (on) => (on ? this.start() : this.stop()) });
  }

  private start(): void {
    if (this.timer) return;
    void this.poll();
    this.timer = setInterval(() => void this.poll(), this.o.intervalMs);
    this.timer.unref();
  }

  private stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private async poll(): Promise<void> {
    // A slow steering must not pile polls up: one at a time, the next tick skipped meanwhile.
    if (this.polling) return;
    this.polling = true;
    try {
      const snap = await clusterSnapshot(this.o.steeringUrl, this.o.timeoutMs ?? Math.max(200, this.o.intervalMs));
      this.o.onPoll?.(snap.steeringError === undefined);
      if (snap.steeringError) this.o.log.debug({ err: snap.steeringError }, 'cluster poll: steering did not answer');
      this.group.send('cluster', snap);
    } finally {
      this.polling = false;
    }
  }

  close(): void {
    this.stop();
    this.group.close();
  }
}

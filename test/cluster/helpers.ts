import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inject } from 'vitest';
import { freePortBlock } from '../../common/ports.ts';
import { clusterDown, clusterUp } from '../../scripts/cluster/cluster.ts';
import { seedIfEmpty } from '../../scripts/cluster/start.ts';
import type { ClusterState } from '../../scripts/cluster/state.ts';

export interface SiteCluster {
  state: ClusterState;
  /** The telemetry namespace (topic prefix) of its aggregator, steering and edges. */
  namespace: string;
  close(): Promise<void>;
}

/**
 * A real cluster of 3 edges in one site on the run's broker, with cold caches and `titles` seeded:
 * its own topics and consumer groups (a namespace), so nothing of another test's cluster is joined.
 */
export async function siteCluster(label: string, site: string, seed: { titles: number; titleDurationSec: number }): Promise<SiteCluster> {
  const dir = await mkdtemp(join(tmpdir(), `ocdn-${label}-`));
  const namespace = `${label}-${randomBytes(3).toString('hex')}`;
  const state = await clusterUp({
    dir,
    edges: 3,
    regions: [site],
    basePort: await freePortBlock([0, 1, 2, 3, 100, 169]),
    kafka: inject('kafkaBrokers'),
    capacity: '256MB',
    telemetryNamespace: namespace,
    readyTimeoutMs: 90_000,
  }).catch(async (err: unknown) => {
    await rm(dir, { recursive: true, force: true });
    throw err;
  });
  await seedIfEmpty(state, { ...seed, ladder: 'small' }, () => undefined);
  return {
    state,
    namespace,
    close: async () => {
      await clusterDown(state.dir).catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

import type { SteeredEdge } from '../common/contracts.ts';
import type { TitleSet } from '../steering/inventory.ts';
import { DEFAULT_EPSILON, type EdgeView, type Policy } from '../steering/policies.ts';
import type { EdgeSource, SteerRequest } from '../player-sim/steer.ts';
import { rngFor, type Rng } from '../player-sim/rng.ts';
import type { VirtualCdn } from '../player-sim/virtual.ts';
import type { LabEdge } from './workload.ts';

/**
 * No inventory: steering then knows nothing cache-related, so a policy's request stream can only
 * differ from another's through timing (miss penalties change how long sessions last, which
 * changes the loads least-loaded and hrw-bounded see).
 */
const NO_TITLES: TitleSet = { has: () => false, size: 0 };

/**
 * Steering's real ranking policies over the lab's edges. Load is the number of sessions an edge
 * is serving (the steering server counts steered sessions the same way), one session adding
 * loadQuantum 1; the client's site comes first, then the other sites in name order.
 */
export class LabSteering implements EdgeSource {
  private readonly load = new Map<string, number>();
  private readonly assigned = new Map<string, string>();
  private readonly sites: string[];
  private readonly random: Rng;
  private seq = 0;

  constructor(
    private readonly policy: Policy,
    private readonly edges: readonly LabEdge[],
    private readonly cdn: VirtualCdn,
    seed: number,
  ) {
    for (const e of edges) this.load.set(e.id, 0);
    this.sites = [...new Set(edges.map((e) => e.region))].sort();
    this.random = rngFor(seed, 'lab-steering', policy.name);
  }

  async steer(req: SteerRequest): Promise<SteeredEdge[]> {
    const views: EdgeView[] = this.edges.map((e) => ({
      id: e.id,
      url: `http://${e.id}.virtual`,
      region: e.region,
      load: this.load.get(e.id)!,
      titles: NO_TITLES,
    }));
    const ranked = this.policy.rank({
      title: req.title,
      edges: views,
      siteOrder: [req.region, ...this.sites.filter((s) => s !== req.region)],
      epsilon: DEFAULT_EPSILON,
      loadQuantum: 1,
      random: this.random,
      seq: this.seq++,
    });
    const first = ranked[0]?.edge.id;
    if (first !== undefined) this.move(req.sessionId, first);
    return ranked.map((r) => ({ id: r.edge.id, url: this.cdn.masterUrl(r.edge.id, req.title), region: r.edge.region, reason: r.reason, score: r.score }));
  }

  /** The session ended: its edge carries one session less. */
  release(sessionId: string): void {
    const e = this.assigned.get(sessionId);
    if (e === undefined) return;
    this.assigned.delete(sessionId);
    this.load.set(e, this.load.get(e)! - 1);
  }

  private move(sessionId: string, edgeId: string): void {
    this.release(sessionId);
    this.assigned.set(sessionId, edgeId);
    this.load.set(edgeId, this.load.get(edgeId)! + 1);
  }
}

import { rebufferRatio } from '../telemetry/qoe-math.ts';
import type { Logger } from '../common/log.ts';
import type { EdgeRegistry } from './registry.ts';

/** The fields of an aggregator `/v1/qoe?by=edge` total row this module reads. */
export interface EdgeQoe {
  value: string; // edge id
  playS: number;
  stallS: number;
  sessionEnds: number;
  rebufferRatio: number | null;
  errorRate: number | null;
  segments: number;
  errors: number;
}

export interface DemotionRules {
  /** An edge is judged only once its sessions played this long in the range (noise guard). */
  minPlayS: number;
  /** Demote when the edge's rebuffer ratio exceeds max(factor × peers' median, median + floor). */
  rebufferFactor: number;
  rebufferFloor: number;
  /** Same rule on error rate (errors per segment here: error exits are rare in a short range). */
  errorFactor: number;
  errorFloor: number;
}

export const defaultDemotionRules: DemotionRules = { minPlayS: 60, rebufferFactor: 3, rebufferFloor: 0.02, errorFactor: 3, errorFloor: 0.02 };

function median(xs: number[]): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export interface Demotion {
  id: string;
  demoted: boolean;
  why: string;
}

/**
 * Pure decision: which edges are "far above their peers" on rebuffering or errors. Each edge is
 * compared with the median of the OTHER edges, so one bad edge cannot raise its own bar; with
 * fewer than two judged edges there is nobody to compare with and nothing is demoted.
 */
export function pickDemotions(rows: EdgeQoe[], rules: DemotionRules = defaultDemotionRules): Demotion[] {
  const judged = rows.filter((r) => r.value && r.value !== 'unknown' && r.playS + r.stallS >= rules.minPlayS);
  // Judged edges played at least minPlayS, so the no-data case (null) cannot arise here.
  const rebuf = (r: EdgeQoe) => rebufferRatio(r.stallS, r.playS) ?? 0;
  const errs = (r: EdgeQoe) => (r.segments > 0 ? r.errors / r.segments : 0);
  return judged.map((r) => {
    const peers = judged.filter((p) => p !== r);
    if (peers.length === 0) return { id: r.value, demoted: false, why: 'no peers to compare with' };
    const rb = rebuf(r);
    const rbMed = median(peers.map(rebuf));
    const rbBar = Math.max(rules.rebufferFactor * rbMed, rbMed + rules.rebufferFloor);
    if (rb > rbBar)
      return {
        id: r.value,
        demoted: true,
        why: `rebuffer ${(rb * 100).toFixed(1)}% > ${(rbBar * 100).toFixed(1)}% (peers' median ${(rbMed * 100).toFixed(1)}%)`,
      };
    const er = errs(r);
    const erMed = median(peers.map(errs));
    const erBar = Math.max(rules.errorFactor * erMed, erMed + rules.errorFloor);
    if (er > erBar) return { id: r.value, demoted: true, why: `errors ${(er * 100).toFixed(1)}%/segment > ${(erBar * 100).toFixed(1)}%` };
    return { id: r.value, demoted: false, why: 'in line with peers' };
  });
}

/**
 * Polls the aggregator's per-edge totals over the recent windows and demotes or restores edges in
 * the registry. The aggregator being down leaves the current demotions as they are: no feedback
 * is not evidence that an edge got better.
 */
export function startQoeFeedback(opts: {
  aggregatorUrl: string;
  registry: Pick<EdgeRegistry, 'setDemoted'>;
  intervalMs?: number;
  lastMs?: number;
  rules?: DemotionRules;
  log?: Logger;
  onDecision?: (d: Demotion[]) => void;
}): { stop(): void; tick(): Promise<Demotion[]> } {
  const lastSec = Math.round((opts.lastMs ?? 60_000) / 1000);
  const url = `${opts.aggregatorUrl.replace(/\/+$/, '')}/v1/qoe?by=edge&last=${lastSec}s`;
  const state = new Map<string, boolean>();
  const tick = async (): Promise<Demotion[]> => {
    let rows: EdgeQoe[];
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2_000) });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      rows = ((await res.json()) as { totals?: EdgeQoe[] }).totals ?? [];
    } catch (err) {
      opts.log?.debug({ err: (err as Error).message, url }, 'QoE feedback: aggregator not answering, keeping current demotions');
      return [];
    }
    const decisions = pickDemotions(rows, opts.rules);
    for (const d of decisions) {
      if ((state.get(d.id) ?? false) === d.demoted) continue;
      state.set(d.id, d.demoted);
      opts.registry.setDemoted(d.id, d.demoted);
      opts.log?.info({ edge: d.id, demoted: d.demoted, why: d.why }, d.demoted ? 'edge demoted on QoE' : 'edge restored on QoE');
    }
    opts.onDecision?.(decisions);
    return decisions;
  };
  const timer = setInterval(() => void tick(), opts.intervalMs ?? 5_000);
  timer.unref();
  return { stop: () => clearInterval(timer), tick };
}

import { renderTable } from '../common/table.ts';
import { formatBytes } from '../common/units.ts';
import type { LabResult } from './experiment.ts';

const pct = (x: number | null) => (x === null ? '-' : `${(x * 100).toFixed(2)}%`);

/**
 * One line per combination; belady rows are the offline bound (no players, so no QoE), and an
 * online row's `bound` is belady's byte hit ratio on that row's own request stream.
 */
export function formatLab(result: LabResult): string {
  const p = result.params;
  const head =
    `${p.sessions} sessions over ${p.titles} titles (zipf ${p.zipfAlpha}, ${p.ladder} ladder, ${p.durationSec} s each), ` +
    `${p.edges} edges in ${Math.min(p.sites, p.edges)} sites, network ${p.network}, seed ${p.seed}; catalog ${formatBytes(p.catalogBytes)}`;
  const table = renderTable(
    [
      'steering',
      'abr',
      'capacity',
      'policy',
      'byte hit',
      'bound',
      'object hit',
      'origin/served',
      'peak rps',
      'mean rps',
      'imbalance',
      'VST p95',
      'rebuffer',
      'avg bitrate',
    ],
    result.rows.map((r) => [
      r.steering,
      r.abr,
      `${(r.capacityFraction * 100).toFixed(1)}% (${formatBytes(r.capacityBytes)})`,
      r.cachePolicy,
      pct(r.byteHitRatio),
      pct(r.beladyByteHitRatio ?? null),
      pct(r.objectHitRatio),
      pct(r.originBytesRatio),
      r.peakLoadRps,
      r.meanLoadRps.toFixed(2),
      r.loadImbalance.toFixed(2),
      r.vstP95Ms === null ? '-' : `${Math.round(r.vstP95Ms)} ms`,
      pct(r.rebufferRatio),
      r.avgBitrate === null ? '-' : `${(r.avgBitrate / 1e6).toFixed(2)} Mbit/s`,
    ]),
  );
  return `${head}\n${table}`;
}

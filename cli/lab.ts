import { writeFileSync } from 'node:fs';
import type { Command } from 'commander';
import { ConfigError, loadConfig } from '../common/config.ts';
import { CACHE_POLICIES, isCachePolicy, type CachePolicy } from '../edge/policies/types.ts';
import { ABR_NAMES, type AbrName } from '../player-sim/abr/index.ts';
import { parseTraceSpec } from '../player-sim/network.ts';
import { LADDER_NAMES } from '../origin/ladder.ts';
import { isPolicyName, POLICY_NAMES, type PolicyName } from '../steering/policies.ts';
import type { LabParams } from '../lab/experiment.ts';
import { formatLab } from '../lab/table.ts';
import { WORKLOAD_DEFAULTS } from '../lab/workload.ts';

const D = WORKLOAD_DEFAULTS;

export const labSpec = {
  policies: { type: 'list', flag: '--policies', default: [...CACHE_POLICIES] as string[] },
  capacities: { type: 'list', flag: '--capacities', default: ['2%', '5%', '10%'] as string[] },
  steering: { type: 'list', flag: '--steering', default: ['hrw-bounded'] as string[] },
  abr: { type: 'list', flag: '--abr', default: ['throughput'] as string[] },
  edges: { type: 'int', flag: '--edges', default: D.edges, min: 1, max: 64 },
  sites: { type: 'int', flag: '--sites', default: D.sites, min: 1, max: 64 },
  titles: { type: 'int', flag: '--titles', default: D.titles, min: 1, max: 100_000 },
  sessions: { type: 'int', flag: '--sessions', default: D.sessions, min: 1, max: 1_000_000 },
  seed: { type: 'int', flag: '--seed', default: 42, min: 0, max: 4_294_967_295 },
  zipf: { type: 'number', flag: '--zipf', default: D.zipfAlpha, min: 0, max: 3 },
  titleLength: { type: 'duration', flag: '--title-length', default: `${D.durationSec}s`, min: 1000 },
  segment: { type: 'duration', flag: '--segment', default: `${D.segmentSec}s`, min: 1000 },
  ladder: { type: 'enum', flag: '--ladder', values: LADDER_NAMES, default: D.ladder },
  watch: { type: 'duration', flag: '--watch', default: `${D.watchMeanS}s`, min: 1000 },
  arrivals: { type: 'duration', flag: '--arrivals', default: `${D.arrivalMs}ms`, min: 1 },
  network: { type: 'string', flag: '--network', default: 'walk:3mbps' },
  rtt: { type: 'duration', flag: '--rtt', default: '20ms' },
  originRtt: { type: 'duration', flag: '--origin-rtt', default: '40ms' },
  json: { type: 'bool', flag: '--json', default: false },
  report: { type: 'string', flag: '--report' },
} as const;

/** "5%" or "0.05" → 0.05. */
function parseFraction(s: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(%?)$/.exec(s.trim());
  if (!m) return undefined;
  const v = Number(m[1]) / (m[2] ? 100 : 1);
  return v > 0 && v <= 1 ? v : undefined;
}

/** Flags → experiment parameters, every problem reported at once. */
export function labParams(flags: Record<string, unknown>): { params: LabParams; json: boolean; report: string | undefined } {
  const cfg = loadConfig(labSpec, flags, {});
  const problems: string[] = [];
  const policies = cfg.policies.filter(
    (p): p is CachePolicy => isCachePolicy(p) || (problems.push(`--policies: "${p}" is not one of ${CACHE_POLICIES.join(', ')}`), false),
  );
  const steering = cfg.steering.filter(
    (p): p is PolicyName => isPolicyName(p) || (problems.push(`--steering: "${p}" is not one of ${POLICY_NAMES.join(', ')}`), false),
  );
  const abr = cfg.abr.filter(
    (a): a is AbrName => (ABR_NAMES as readonly string[]).includes(a) || (problems.push(`--abr: "${a}" is not one of ${ABR_NAMES.join(', ')}`), false),
  );
  const capacities: number[] = [];
  for (const c of cfg.capacities) {
    const v = parseFraction(c);
    if (v === undefined) problems.push(`--capacities: "${c}" is not a fraction in (0, 1] (like 5% or 0.05)`);
    else capacities.push(v);
  }
  for (const key of ['policies', 'capacities', 'steering', 'abr'] as const) if (cfg[key].length === 0) problems.push(`--${key} needs at least one value`);
  try {
    parseTraceSpec(cfg.network, { seed: cfg.seed });
  } catch (err) {
    problems.push((err as Error).message.replace(/^E_CONFIG: /, ''));
  }
  if (cfg.network.startsWith('file:')) problems.push('--network file: traces are not supported by the lab (its runs must depend on the arguments alone)');
  if (problems.length > 0) throw new ConfigError(problems);
  const params: LabParams = {
    policies: [...new Set(policies)],
    capacities: [...new Set(capacities)].sort((a, b) => a - b),
    steering: [...new Set(steering)],
    abr: [...new Set(abr)],
    edges: cfg.edges,
    sites: cfg.sites,
    titles: cfg.titles,
    sessions: cfg.sessions,
    seed: cfg.seed,
    zipfAlpha: cfg.zipf,
    durationSec: cfg.titleLength / 1000,
    segmentSec: cfg.segment / 1000,
    ladder: cfg.ladder,
    watchMeanS: cfg.watch / 1000,
    arrivalMs: cfg.arrivals,
    network: cfg.network,
    rttMs: cfg.rtt,
    originRttMs: cfg.originRtt,
  };
  return { params, json: cfg.json, report: cfg.report };
}

export function registerLab(program: Command): void {
  program
    .command('lab')
    .description(
      'cache-policy experiments in one process, deterministic: a seeded virtual-time player workload (Zipf titles) replayed through ' +
        "steering's ranking policies and the edge's eviction stores, for every combination of the lists given, with the offline " +
        "Belady bound beside them; byte/object hit ratios, origin bytes, per-edge load and the players' QoE",
    )
    .option('--policies <list>', `edge cache eviction policies: ${CACHE_POLICIES.join(',')} [default all]`)
    .option('--capacities <list>', 'per-edge cache sizes as fractions of the catalog bytes, e.g. 2%,5%,10% or 0.05 [default 2%,5%,10%]')
    .option('--steering <list>', `steering ranking policies: ${POLICY_NAMES.join(',')} [default hrw-bounded]`)
    .option('--abr <list>', `player ABR algorithms: ${ABR_NAMES.join(',')} [default throughput]`)
    .option('--edges <n>', `edges [default ${D.edges}]`)
    .option('--sites <n>', `sites the edges (and viewers) are spread over, round-robin [default ${D.sites}]`)
    .option('--titles <n>', `synthetic titles in the catalog [default ${D.titles}]`)
    .option('--sessions <n>', `player sessions in the workload [default ${D.sessions}]`)
    .option('--seed <n>', 'seed for the whole workload: arrivals, titles, watch times, network traces, random steering [default 42]')
    .option('--zipf <alpha>', `Zipf exponent of title popularity [default ${D.zipfAlpha}]`)
    .option('--title-length <time>', `length of every title [default ${D.durationSec}s]`)
    .option('--segment <time>', `segment length [default ${D.segmentSec}s]`)
    .option('--ladder <name>', `bit-rate ladder: ${LADDER_NAMES.join('|')} [default ${D.ladder}]`)
    .option('--watch <time>', `mean watch time (geometric drop-off) [default ${D.watchMeanS}s]`)
    .option('--arrivals <time>', `sessions arrive as a Poisson process over this much virtual time [default ${D.arrivalMs / 1000}s]`)
    .option('--network <trace>', "players' access links, as ocdn play --network (no file:) [default walk:3mbps]")
    .option('--rtt <time>', 'player ↔ edge round trip [default 20ms]')
    .option('--origin-rtt <time>', 'edge ↔ origin round trip, added to the first byte of every cache miss [default 40ms]')
    .option('--json', 'print { rows, params } as JSON (the same arguments give the same bytes)')
    .option('--report <file.html>', 'also write a self-contained HTML page: byte hit ratio vs capacity per policy, Belady dashed')
    .action(async (flags: Record<string, unknown>) => {
      const { params, json, report } = labParams(flags);
      const progress = process.stderr.isTTY && !json ? (done: number, total: number) => process.stderr.write(`\rreplay ${done}/${total}`) : undefined;
      // The lab loads when it runs: the CLI registering `lab` does not pay for the edge and steering code.
      const { runLab } = await import('../lab/experiment.ts');
      const result = await runLab(params, progress);
      if (progress) process.stderr.write('\n');
      if (report) {
        const { renderReport } = await import('../lab/report.ts');
        writeFileSync(report, renderReport(result, ['ocdn', ...process.argv.slice(2)].join(' ')));
        if (!json) process.stderr.write(`report: ${report}\n`);
      }
      process.stdout.write(json ? `${JSON.stringify(result, null, 2)}\n` : `${formatLab(result)}\n`);
    });
}

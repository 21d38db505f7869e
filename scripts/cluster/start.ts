import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { clusterS3Client } from '../catalog-client.ts';
import { readCatalog, seedContent } from '../../origin/seed.ts';
import { clusterDown, clusterUp } from './cluster.ts';
import type { ClusterOptions } from './options.ts';
import { printClusterTable } from './table.ts';
import { OCDN_BIN, spawnOcdn } from './processes.ts';
import { updateState, type ClusterState } from './state.ts';

export interface StartOptions extends Partial<ClusterOptions> {
  players: number;
  titles: number;
  titleDurationSec: number;
  ladder: string;
  watch: boolean;
}

/** Seeds a small catalog when the bucket has none, so a first `npm start` has something to play. */
export async function seedIfEmpty(
  state: ClusterState,
  o: Pick<StartOptions, 'titles' | 'titleDurationSec' | 'ladder'> & { mode?: 'synthetic' | 'ffmpeg' },
  say: (s: string) => void,
): Promise<void> {
  const client = clusterS3Client(state.s3Endpoint);
  try {
    const existing = await readCatalog(client, state.bucket);
    if (existing && existing.titles.length > 0) {
      say(`bucket holds ${existing.titles.length} titles; not seeding`);
      return;
    }
    say(`seeding ${o.titles} titles × ${o.titleDurationSec} s (${o.ladder} ladder)`);
    const r = await seedContent({
      client,
      bucket: state.bucket,
      titles: o.titles,
      durationSec: o.titleDurationSec,
      segmentSec: 4,
      ladder: o.ladder,
      mode: o.mode,
    });
    say(`seeded ${r.uploaded} objects, ${(r.bytes / 1e6).toFixed(0)} MB in ${(r.elapsedMs / 1000).toFixed(1)} s`);
  } finally {
    client.destroy();
  }
}

/**
 * `npm start`: the whole product on one machine. Cluster up, a catalog, a steady population of
 * players steered by the cluster and reporting to Kafka, and the live QoE view in the terminal.
 * Ctrl-C stops the view, then the players (they flush their events), then the cluster in order.
 */
export async function startAll(o: StartOptions, say: (s: string) => void): Promise<void> {
  const state = await clusterUp({ ...o, supervise: true, onProgress: say });
  printClusterTable(state);
  let stopping = false;
  const children: ReturnType<typeof spawn>[] = [];
  const stopAll = async () => {
    if (stopping) return;
    stopping = true;
    for (const c of children) c.kill('SIGTERM');
    say('stopping the cluster');
    await clusterDown(state.dir, say);
  };
  process.on('SIGINT', () => void stopAll());
  process.on('SIGTERM', () => void stopAll());
  try {
    await seedIfEmpty(state, o, say);
    // Players spread over the edges' regions, so every site carries load in the live view.
    const regions = [...new Set(state.components.filter((c) => c.kind === 'edge' && c.region).map((c) => c.region!))];
    const playArgs = [
      'play',
      '--players',
      String(o.players),
      '--ramp',
      '20s',
      '--duration',
      '24h',
      '--steering',
      state.steeringUrl,
      '--brokers',
      state.brokers,
      '--titles',
      'zipf:0.9',
      ...(regions.length ? ['--region', regions.join(',')] : []),
    ];
    const p = await spawnOcdn(playArgs, join(state.dir, 'logs', 'players.log'));
    const players = { name: 'players', kind: 'players' as const, pid: p.pid, port: 0, url: '', log: p.log, args: playArgs };
    state.components.push(players);
    // The supervisor writes the file too: add to what is on disk, not over it.
    await updateState(state.dir, (s) => {
      s.components.push(players);
      return true;
    });
    say(`${o.players} players running (log: ${p.log}); QoE below, Ctrl-C stops everything`);
  } catch (err) {
    await stopAll();
    throw err;
  }
  if (!o.watch) return;
  const watch = spawn(process.execPath, [OCDN_BIN, 'qoe', 'watch', '--url', state.aggregatorUrl], { stdio: 'inherit' });
  children.push(watch);
  await new Promise<void>((resolve) => watch.on('exit', () => resolve()));
  await stopAll();
}

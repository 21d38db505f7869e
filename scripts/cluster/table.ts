import { renderTable } from '../../common/table.ts';
import type { ClusterState } from './state.ts';

export function printClusterTable(state: ClusterState): void {
  const rows = state.components.map((c) => [c.name, c.external ? 'external' : String(c.pid), c.url, c.region ?? '', c.log]);
  process.stdout.write(`${renderTable(['component', 'pid', 'url', 'region', 'log'], rows)}\n`);
}

import { renderTable } from '../../common/table.ts';
import type { ClusterState } from './state.ts';

export function printClusterTable(state: ClusterState): void {
  const rows = state.components.map((c) => [c.name, c.external ? 'external' : String(c.pid), c.loginUrl ?? c.url, c.region ?? '', c.log]);
  process.stdout.write(`${renderTable(['component', 'pid', 'url', 'region', 'log'], rows)}\n`);
  const login = state.components.find((c) => c.kind === 'console')?.loginUrl;
  if (login) process.stdout.write(`\nweb console: ${login}\n(the link logs in once; "ocdn console url" prints a new one)\n`);
}

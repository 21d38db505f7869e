import type { Command } from 'commander';

export function registerCluster(program: Command): void {
  program.command('cluster').description('run a whole local CDN cluster (up, status, down)');
}

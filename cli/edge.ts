import type { Command } from 'commander';

export function registerEdge(program: Command): void {
  program.command('edge').description('edge cache node (byte-bounded LRU in front of S3)');
}

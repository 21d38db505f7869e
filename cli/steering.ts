import type { Command } from 'commander';

export function registerSteering(program: Command): void {
  program.command('steering').description('steering service: edge registry, ranking, signed URLs, HLS Content Steering');
}

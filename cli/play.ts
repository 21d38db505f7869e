import type { Command } from 'commander';

export function registerPlay(program: Command): void {
  program.command('play').description('simulated HLS players with ABR, network traces and QoE events');
}

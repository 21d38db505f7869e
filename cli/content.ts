import type { Command } from 'commander';

export function registerContent(program: Command): void {
  program.command('content').description('package titles into HLS and seed the S3 bucket');
}

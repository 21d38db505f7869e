import type { Command } from 'commander';

export function registerOrigin(program: Command): void {
  program.command('origin').description('embedded S3 origin (s3rver on 127.0.0.1)');
}

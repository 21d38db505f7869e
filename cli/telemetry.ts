import type { Command } from 'commander';

export function registerTelemetry(program: Command): void {
  program.command('kafka').description('local Apache Kafka broker (KRaft, from Maven Central jars)');
  program.command('telemetry').description('QoE telemetry aggregator');
  program.command('qoe').description('show QoE aggregates (top, watch, report, verify)');
}

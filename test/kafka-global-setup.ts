/**
 * One real Kafka broker for the whole test run, on free ports, torn down at the end; test files
 * get its address with `inject('kafkaBrokers')`. KAFKA_BROKERS reuses an existing cluster instead.
 * Runs that select only other folders (e.g. `vitest run test/edge`) skip the broker entirely.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { createLogger } from '../common/log.ts';
import { freePorts } from '../common/ports.ts';
import { startKafka } from '../scripts/kafka.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    kafkaBrokers: string;
  }
}

const RUNNER_WORDS = new Set(['run', 'watch', 'dev', 'related']);

function wantsKafka(argv: string[]): boolean {
  if (argv.some((a) => a === '-t' || a.startsWith('--testNamePattern'))) return true;
  const filters = argv.slice(2).filter((a) => !a.startsWith('-') && !RUNNER_WORDS.has(a) && !/vitest(\.m?js)?$/.test(a));
  if (filters.length === 0) return true;
  return filters.some((f) => /telemetry|kafka|cluster|security|console|browser/.test(f) || 'test/telemetry/'.includes(f.replace(/^\.\//, '')));
}

export default async function setup(project: TestProject): Promise<(() => Promise<void>) | undefined> {
  if (process.env.KAFKA_BROKERS) {
    project.provide('kafkaBrokers', process.env.KAFKA_BROKERS);
    return undefined;
  }
  if (!wantsKafka(process.argv)) {
    project.provide('kafkaBrokers', '');
    return undefined;
  }
  const dir = await mkdtemp(join(tmpdir(), 'ocdn-test-kafka-'));
  const [port, controllerPort] = await freePorts(2);
  const handle = await startKafka({
    dir,
    port: port!,
    controllerPort: controllerPort!,
    log: createLogger('kafka', { level: 'silent' }),
    onProgress: () => undefined,
  });
  project.provide('kafkaBrokers', handle.brokers);
  return async () => {
    await handle.stop(20_000);
    await rm(dir, { recursive: true, force: true });
  };
}

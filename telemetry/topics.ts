/**
 * Topic names and broker lists: what the CLI, edges and steering need to name Kafka, apart from
 * telemetry/kafka.ts so that naming it does not load kafkajs.
 */
import { ErrorCodes, OcdnError } from '../common/errors.ts';
import { TOPICS } from './events.ts';

export interface TopicNames {
  events: string;
  aggregates: string;
  dlq: string;
  decisions: string;
  access: string;
}

/** The DESIGN.md topic names, optionally prefixed (tests give each case its own set). */
export function topicNames(prefix = ''): TopicNames {
  return {
    events: `${prefix}${TOPICS.events}`,
    aggregates: `${prefix}${TOPICS.aggregates}`,
    dlq: `${prefix}${TOPICS.dlq}`,
    decisions: `${prefix}${TOPICS.decisions}`,
    access: `${prefix}${TOPICS.access}`,
  };
}

export const DEFAULT_BROKERS = '127.0.0.1:9092';

/** "h1:9092,h2:9092" or a list → validated host:port list; CONFIG error naming the bad entry. */
export function parseBrokers(input: string | string[] | undefined): string[] {
  const raw = input === undefined ? [process.env.KAFKA_BROKERS || DEFAULT_BROKERS] : Array.isArray(input) ? input : [input];
  const list = raw
    .flatMap((s) => s.split(','))
    .map((s) => s.trim())
    .filter(Boolean);
  const bad = list.filter((b) => !/^[\w.-]+:\d{1,5}$/.test(b));
  if (list.length === 0 || bad.length)
    throw new OcdnError(ErrorCodes.CONFIG, `--brokers: expected host:port[,host:port…], got "${bad.join(',') || String(input)}"`);
  return list;
}

/**
 * kafkajs plumbing shared by the producer, the aggregator, the CLI and scripts/kafka.ts: broker
 * lists, a client whose logs go through pino, and explicit topic creation (DESIGN.md: KRaft +
 * kafkajs fails on auto-creation, so every topic is created up front).
 */
import { Kafka, logLevel, type KafkaConfig, type LogEntry } from 'kafkajs';
import { ErrorCodes, OcdnError } from '../common/errors.ts';
import { createLogger, type Logger } from '../common/log.ts';
import { waitFor } from '../common/retry.ts';
import { parseBrokers, topicNames, type TopicNames } from './topics.ts';

function pinoLogCreator(log: Logger) {
  return () =>
    ({ level, log: entry }: LogEntry) => {
      const { message, ...rest } = entry;
      // kafkajs logs every reconnect attempt as ERROR; while a broker restarts that is expected.
      if (level <= logLevel.WARN) log.warn(rest, `kafkajs: ${message}`);
      else if (level === logLevel.INFO) log.debug(rest, `kafkajs: ${message}`);
    };
}

export function createKafka(opts: { brokers: string[]; clientId: string; log?: Logger } & Partial<KafkaConfig>): Kafka {
  const { brokers, clientId, log, ...rest } = opts;
  return new Kafka({
    clientId,
    brokers,
    logLevel: logLevel.WARN,
    logCreator: pinoLogCreator((log ?? createLogger('kafkajs')).child({ kafkaClient: clientId })),
    connectionTimeout: 3_000,
    ...rest,
  });
}

/**
 * Creates the topics when missing. Events: ≥6 partitions keyed by sessionId; aggregates:
 * compacted (latest partial per window|dimension|value|partition) and also deleted after a
 * day so old windows do not pile up; DLQ: kept a week for inspection; steering decisions and
 * edge access records: 6 partitions each keyed by sessionId (so one session's records of both
 * sit in the same partition number), kept a day.
 */
export async function ensureTopics(
  brokers: string | string[],
  opts: { topics?: TopicNames; eventPartitions?: number | undefined; log?: Logger } = {},
): Promise<void> {
  const topics = opts.topics ?? topicNames();
  const list = Array.isArray(brokers) ? brokers : parseBrokers(brokers);
  const admin = createKafka({ brokers: list, clientId: 'ocdn-topics', log: opts.log, retry: { retries: 5 } }).admin();
  await admin.connect();
  try {
    const existing = new Set(await admin.listTopics());
    const wanted = [
      {
        topic: topics.events,
        numPartitions: Math.max(6, opts.eventPartitions ?? 6),
        replicationFactor: 1,
        // The broker stamps each message with its arrival time, which event times are checked
        // against (a producer cannot vouch for its own clock; telemetry/validate.ts eventTimeProblem).
        configEntries: [
          { name: 'retention.ms', value: String(24 * 3600_000) },
          { name: 'message.timestamp.type', value: 'LogAppendTime' },
        ],
      },
      {
        topic: topics.aggregates,
        numPartitions: 3,
        replicationFactor: 1,
        configEntries: [
          { name: 'cleanup.policy', value: 'compact,delete' },
          { name: 'retention.ms', value: String(24 * 3600_000) },
          { name: 'segment.ms', value: String(600_000) },
          { name: 'min.cleanable.dirty.ratio', value: '0.2' },
        ],
      },
      { topic: topics.dlq, numPartitions: 3, replicationFactor: 1, configEntries: [{ name: 'retention.ms', value: String(7 * 24 * 3600_000) }] },
      ...[topics.decisions, topics.access].map((topic) => ({
        topic,
        numPartitions: 6,
        replicationFactor: 1,
        configEntries: [
          { name: 'retention.ms', value: String(24 * 3600_000) },
          { name: 'message.timestamp.type', value: 'LogAppendTime' },
        ],
      })),
    ].filter((t) => !existing.has(t.topic));
    if (wanted.length) {
      try {
        // waitForLeaders is off on purpose: with KRaft, kafkajs' own wait can hit
        // UNKNOWN_TOPIC_OR_PARTITION while metadata propagates and reject outside our await
        // (an unhandled rejection that kills the process). We poll the metadata ourselves.
        await admin.createTopics({ topics: wanted, waitForLeaders: false, timeout: 30_000 });
      } catch (err) {
        // Two processes creating at once: the loser sees TOPIC_ALREADY_EXISTS, which is fine.
        if (!/already exists/i.test((err as Error).message)) throw err;
      }
    }
    const names = [topics.events, topics.aggregates, topics.dlq, topics.decisions, topics.access];
    await waitFor(
      async () => {
        const meta = await admin.fetchTopicMetadata({ topics: names });
        const t = meta.topics.find((x) => x.partitions.length === 0 || x.partitions.some((p) => p.leader < 0));
        if (t) throw new Error(`topic ${t.name} has no leader yet`);
        return true;
      },
      {
        timeoutMs: 60_000,
        intervalMs: 100,
        timeoutError: (_, last) =>
          new OcdnError(ErrorCodes.BROKER_UNAVAILABLE, `topics not ready after 60 s: ${(last as Error | undefined)?.message ?? 'no answer'}`),
      },
    );
  } finally {
    await admin.disconnect().catch(() => undefined);
  }
}

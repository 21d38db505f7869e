/** What `cluster up` takes, and its defaults: apart from cluster.ts so the CLI can show them without loading it. */
import { DEFAULT_BASE_PORT, DEFAULT_KAFKA_PORT } from '../../common/cluster-context.ts';
import type { Logger } from '../../common/log.ts';

export interface ClusterOptions {
  dir: string;
  edges: number;
  regions: string[];
  capacity: string; // e.g. "256MB"
  /** "embedded" or an S3 endpoint URL. */
  s3: string;
  bucket: string;
  /** "local" or a comma-separated broker list. */
  kafka: string;
  basePort: number; // steering = base, edges = base+1.., shield = base+90, aggregator = base+100, s3 = base+169
  kafkaPort: number;
  /** One shield edge (not steered to) between the edges and S3: edges send their misses to it. */
  shield: boolean;
  policy: string;
  /** Every edge's eviction policy (edge serve --policy). */
  cachePolicy: string;
  /** Every edge gets a disk tier of this size under <dir>/disk/<edge id> (edge serve --disk-capacity). */
  diskCapacity?: string;
  /** Every edge's edge-wide fill rate cap (edge serve --fill-rate-cap), e.g. "20MB". */
  fillRateCap?: string;
  /**
   * Run the fill controller as a supervised child (`ocdn fill run --every`, base port + 110 for
   * its /healthz and /metrics): a cycle this often, with these window, budget, copies and top.
   */
  fill?: { every: string; window: string; budget: string; copies: string; top: number };
  readyTimeoutMs: number;
  /** Start the supervisor process that restarts crashed components (the CLI and `npm start` do). */
  supervise: boolean;
  /** Start the web console (base port + 200; the CLI and `npm start` do). */
  console: boolean;
  /**
   * Topic prefix and consumer group of this cluster's telemetry, for clusters that share one
   * broker (the test run's): without it their aggregators would count each other's sessions.
   */
  telemetryNamespace?: string;
  log?: Logger;
  onProgress?: (line: string) => void;
}

export const defaultClusterOptions: ClusterOptions = {
  dir: '.ocdn',
  edges: 3,
  regions: ['us-east', 'us-west', 'eu-west'],
  capacity: '256MB',
  s3: 'embedded',
  bucket: 'ocdn-media',
  kafka: 'local',
  basePort: DEFAULT_BASE_PORT,
  kafkaPort: DEFAULT_KAFKA_PORT,
  shield: false,
  policy: 'hrw-bounded',
  cachePolicy: 'lru',
  readyTimeoutMs: 120_000,
  supervise: false,
  console: false,
};

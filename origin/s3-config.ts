import type { Command } from 'commander';
import { type ContextKey, DEFAULT_PORTS } from '../common/cluster-context.ts';
import { loadConfig, type ConfigOf } from '../common/config.ts';

/** Credentials the embedded s3rver accepts (it checks signatures against these). */
export const EMBEDDED_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } as const;
/** The cluster's S3 port, so a bare command and `cluster up` agree. */
export const DEFAULT_S3_PORT = DEFAULT_PORTS.s3;
export const DEFAULT_BUCKET = 'ocdn-media';

export const s3ConfigSpec = {
  s3Endpoint: { type: 'url', flag: '--s3-endpoint', env: 'OCDN_S3_ENDPOINT', ctx: 's3Endpoint', default: `http://127.0.0.1:${DEFAULT_S3_PORT}` },
  bucket: { type: 'string', flag: '--bucket', env: 'OCDN_S3_BUCKET', ctx: 'bucket', default: DEFAULT_BUCKET, pattern: /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/ },
  s3Region: { type: 'string', flag: '--s3-region', env: 'AWS_REGION', default: 'us-east-1' },
  accessKeyId: { type: 'string', flag: '--access-key-id', env: 'AWS_ACCESS_KEY_ID', default: EMBEDDED_CREDENTIALS.accessKeyId },
  secretAccessKey: { type: 'string', flag: '--secret-access-key', env: 'AWS_SECRET_ACCESS_KEY', default: EMBEDDED_CREDENTIALS.secretAccessKey },
  forcePathStyle: { type: 'bool', flag: '--path-style', env: 'OCDN_S3_PATH_STYLE', default: true },
} as const;

export type S3Config = ConfigOf<typeof s3ConfigSpec>;

/** Adds the S3 flags to a command; values resolve through loadConfig (flag → env → default). */
export function addS3Options(cmd: Command): Command {
  return cmd
    .option('--s3-endpoint <url>', `S3 endpoint (env OCDN_S3_ENDPOINT) [default: the cluster's, else http://127.0.0.1:${DEFAULT_S3_PORT}]`)
    .option('--bucket <name>', `bucket (env OCDN_S3_BUCKET) [default: the cluster's, else ${DEFAULT_BUCKET}]`)
    .option('--s3-region <region>', 'S3 region (env AWS_REGION) [default us-east-1]')
    .option('--access-key-id <id>', 'S3 access key (env AWS_ACCESS_KEY_ID) [default the embedded S3 key]')
    .option('--secret-access-key <key>', 'S3 secret key (env AWS_SECRET_ACCESS_KEY)')
    .option('--path-style <bool>', 'path-style bucket addressing (env OCDN_S3_PATH_STYLE) [default true]');
}

export function loadS3Config(
  flags: Record<string, unknown> = {},
  env: NodeJS.ProcessEnv = process.env,
  context: Partial<Record<ContextKey, unknown>> = {},
): S3Config {
  return loadConfig(s3ConfigSpec, normalizeS3Flags(flags), env, context);
}

/**
 * commander names the value of `--path-style` `pathStyle`, while the config field is
 * `forcePathStyle`; without this the flag would be silently ignored. Use it when merging
 * s3ConfigSpec into a command's own spec.
 */
export function normalizeS3Flags(flags: Record<string, unknown>): Record<string, unknown> {
  if (flags.forcePathStyle !== undefined || flags.pathStyle === undefined) return flags;
  return { ...flags, forcePathStyle: flags.pathStyle };
}

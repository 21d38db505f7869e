/**
 * The S3 client every part uses, apart from origin/s3-config.ts (flags and config) so that a
 * command registering S3 flags does not load the SDK until it talks to S3.
 */
import { S3Client } from '@aws-sdk/client-s3';
import type { S3Config } from './s3-config.ts';

export function createS3Client(
  cfg: Pick<S3Config, 's3Endpoint' | 's3Region' | 'accessKeyId' | 'secretAccessKey' | 'forcePathStyle'>,
  opts: { maxAttempts?: number; requestTimeoutMs?: number; connectTimeoutMs?: number } = {},
): S3Client {
  // The SDK warns (on stderr, once per process) that releases after January 2027 need Node 22.
  // This project pins Node 20 and the SDK version in the lockfile; the warning would break the
  // CLI's "one line on stderr" contract for every command that talks to S3. An explicit setting wins.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  return new S3Client({
    endpoint: cfg.s3Endpoint,
    region: cfg.s3Region,
    forcePathStyle: cfg.forcePathStyle,
    credentials: { accessKeyId: cfg.accessKeyId, secretAccessKey: cfg.secretAccessKey },
    // SDK ≥3.729 adds CRC32 trailers with aws-chunked bodies by default; s3rver, older MinIO
    // and many S3-compatible stores do not understand them, so only send checksums when required.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    maxAttempts: opts.maxAttempts ?? 3,
    requestHandler: {
      requestTimeout: opts.requestTimeoutMs ?? 30_000,
      connectionTimeout: opts.connectTimeoutMs ?? 3_000,
    },
  });
}

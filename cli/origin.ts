import { resolve } from 'node:path';
import type { Command } from 'commander';
import { loadConfig } from '../common/config.ts';
import { ErrorCodes, OcdnError } from '../common/errors.ts';
import { createLogger } from '../common/log.ts';
import { Shutdown } from '../common/shutdown.ts';
import { DEFAULT_S3_PORT, s3ConfigSpec } from '../origin/s3-config.ts';
import { startEmbeddedS3 } from '../origin/s3-server.ts';

export const originServeSpec = {
  port: { type: 'int', flag: '--port', env: 'OCDN_S3_PORT', default: DEFAULT_S3_PORT, min: 0, max: 65_535 },
  dir: { type: 'string', flag: '--dir', env: 'OCDN_S3_DIR', default: '.ocdn/s3' },
  bucket: s3ConfigSpec.bucket,
} as const;

export function registerOrigin(program: Command): void {
  const origin = program.command('origin').description('embedded S3 origin (s3rver on 127.0.0.1)');
  origin
    .command('serve')
    .description(
      'run an S3-protocol server on 127.0.0.1 with its files under --dir. It has no /healthz ' +
        '(third-party server): probe it with an S3 HeadBucket, e.g. OriginReader.ping()',
    )
    .option('--port <port>', `port, 0 = any free port (env OCDN_S3_PORT) [default ${DEFAULT_S3_PORT}]`)
    .option('--dir <path>', 'where objects are stored (env OCDN_S3_DIR) [default .ocdn/s3]')
    .option('--bucket <name>', 'bucket created at start (env OCDN_S3_BUCKET) [default ocdn-media]')
    .action(async (flags: Record<string, unknown>) => {
      const cfg = loadConfig(originServeSpec, flags);
      const log = createLogger('origin');
      const dir = resolve(cfg.dir);
      const s3 = await startEmbeddedS3({ port: cfg.port, dir, bucket: cfg.bucket }).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'EADDRINUSE')
          throw new OcdnError(ErrorCodes.PORT_IN_USE, `port 127.0.0.1:${cfg.port} is already in use (another origin running? pick --port)`, { cause: err });
        throw err;
      });
      const shutdown = new Shutdown({ log });
      shutdown.add('s3rver', () => s3.close());
      shutdown.installSignalHandlers();
      // Scripts and tests wait for this line and read the endpoint (the real port when --port 0).
      log.info({ endpoint: s3.endpoint, port: s3.port, bucket: cfg.bucket, dir }, 'origin listening');
    });
}

import { mkdir } from 'node:fs/promises';
import { DEFAULT_BUCKET } from './s3-config.ts';

export interface EmbeddedS3 {
  endpoint: string;
  port: number;
  dir: string;
  close(): Promise<void>;
}

/**
 * Starts s3rver (a real S3-protocol server) on 127.0.0.1 with its files under `dir`, and makes
 * sure the bucket exists. Port 0 picks a free port (tests).
 */
export async function startEmbeddedS3(opts: { port?: number; dir: string; bucket?: string; host?: string }): Promise<EmbeddedS3> {
  await mkdir(opts.dir, { recursive: true });
  const host = opts.host ?? '127.0.0.1';
  // Loaded here, not at the top: every ocdn process imports this module, few start an S3 server.
  const { default: S3rver } = await import('s3rver');
  const server = new S3rver({
    port: opts.port ?? 0,
    address: host,
    directory: opts.dir,
    silent: true,
    configureBuckets: [{ name: opts.bucket ?? DEFAULT_BUCKET, configs: [] }],
  });
  const addr = (await server.run()) as unknown as { port: number };
  return {
    endpoint: `http://${host}:${addr.port}`,
    port: addr.port,
    dir: opts.dir,
    // s3rver's close waits for keep-alive sockets that SDK clients keep open; cut them.
    close: async () => {
      const http = (server as unknown as { httpServer?: import('node:http').Server }).httpServer;
      const closing = server.close();
      http?.closeAllConnections();
      await closing;
    },
  };
}

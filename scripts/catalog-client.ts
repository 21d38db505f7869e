import type { Catalog } from '../common/contracts.ts';
import { ErrorCodes, OcdnError, isOcdnError } from '../common/errors.ts';
import { EMBEDDED_CREDENTIALS } from '../origin/s3-config.ts';
import { createS3Client } from '../origin/s3-client.ts';
import { readCatalog } from '../origin/seed.ts';

/** The S3 client the cluster's own tools use: endpoint from the cluster state, credentials from env. */
export function clusterS3Client(s3Endpoint: string) {
  return createS3Client(
    {
      s3Endpoint,
      s3Region: process.env.AWS_REGION ?? 'us-east-1',
      accessKeyId: process.env.AWS_ACCESS_KEY_ID ?? EMBEDDED_CREDENTIALS.accessKeyId,
      secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY ?? EMBEDDED_CREDENTIALS.secretAccessKey,
      forcePathStyle: true,
    },
    { maxAttempts: 2, requestTimeoutMs: 5_000 },
  );
}

/** Reads catalog.json from the bucket; undefined when the bucket has none yet. */
export async function fetchCatalog(s3Endpoint: string, bucket: string): Promise<Catalog | undefined> {
  const client = clusterS3Client(s3Endpoint);
  try {
    return await readCatalog(client, bucket);
  } catch (err) {
    if (isOcdnError(err)) throw err;
    throw new OcdnError(ErrorCodes.S3_UNREACHABLE, `cannot read catalog.json from ${s3Endpoint}/${bucket}: ${(err as Error).message}`);
  } finally {
    client.destroy();
  }
}

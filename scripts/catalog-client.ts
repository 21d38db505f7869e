import { GetObjectCommand } from '@aws-sdk/client-s3';
import { CATALOG_KEY, type Catalog } from '../common/contracts.ts';
import { ErrorCodes, OcdnError } from '../common/errors.ts';
import { createS3Client } from '../origin/s3-config.ts';
import { EMBEDDED_CREDENTIALS } from '../origin/s3-config.ts';

/** Reads catalog.json from the bucket; undefined when the bucket has none yet. */
export async function fetchCatalog(s3Endpoint: string, bucket: string): Promise<Catalog | undefined> {
  const client = createS3Client(
    {
      s3Endpoint,
      s3Region: process.env.AWS_REGION ?? 'us-east-1',
      accessKeyId: process.env.AWS_ACCESS_KEY_ID ?? EMBEDDED_CREDENTIALS.accessKeyId,
      secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY ?? EMBEDDED_CREDENTIALS.secretAccessKey,
      forcePathStyle: true,
    },
    { maxAttempts: 2, requestTimeoutMs: 5_000 },
  );
  try {
    const out = await client.send(new GetObjectCommand({ Bucket: bucket, Key: CATALOG_KEY }));
    const text = await out.Body!.transformToString();
    return JSON.parse(text) as Catalog;
  } catch (err) {
    const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
    if (e.name === 'NoSuchKey' || e.name === 'NoSuchBucket' || e.$metadata?.httpStatusCode === 404) return undefined;
    throw new OcdnError(ErrorCodes.S3_UNREACHABLE, `cannot read ${CATALOG_KEY} from ${s3Endpoint}/${bucket}: ${(err as Error).message}`);
  } finally {
    client.destroy();
  }
}

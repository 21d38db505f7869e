/**
 * Steering alone in its own process, for tests that measure its memory (RSS) from outside:
 * static catalog, edge key from OCDN_EDGE_KEY, probes every 200 ms. Prints its URL on stdout.
 */
import { createLogger } from '../../common/log.ts';
import { startSteering } from '../../steering/server.ts';
import { testCatalog } from '../steering/helpers.ts';

const st = await startSteering({
  port: 0,
  tokenSecret: 'flood-token-secret',
  edgeKey: process.env.OCDN_EDGE_KEY ?? null,
  catalog: testCatalog(50),
  registry: {
    probeIntervalMs: 200,
    probeTimeoutMs: 200,
    rise: 2,
    heartbeatIntervalMs: 1_000,
    ...(process.env.OCDN_TEST_MAX_EDGES ? { maxEdges: Number(process.env.OCDN_TEST_MAX_EDGES) } : {}),
  },
  log: createLogger('steering', { level: 'warn' }),
});
process.stdout.write(`${JSON.stringify({ url: st.url })}\n`);
process.once('SIGTERM', () => void st.close().then(() => process.exit(0)));

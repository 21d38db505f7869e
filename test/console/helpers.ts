import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inject } from 'vitest';
import type { Catalog } from '../../common/contracts.ts';
import { waitFor } from '../../common/http.ts';
import { freePortBlock } from '../../common/ports.ts';
import { mintLoginUrl } from '../../console/login-client.ts';
import { clusterDown, clusterUp } from '../../scripts/cluster/cluster.ts';
import { seedIfEmpty } from '../../scripts/cluster/start.ts';
import type { ClusterState, ComponentState } from '../../scripts/cluster/state.ts';

export interface ConsoleCluster {
  state: ClusterState;
  console: ComponentState;
  dir: string;
  stop(): Promise<void>;
}

/**
 * A real cluster (S3, steering, edges, aggregator as processes, the test run's Kafka broker)
 * with the console, started as `cluster up` starts it, and a small catalog.
 */
export async function startConsoleCluster(
  label: string,
  edges = 2,
  seed: { titles: number; titleDurationSec: number; mode?: 'synthetic' | 'ffmpeg' } = { titles: 2, titleDurationSec: 16 },
): Promise<ConsoleCluster> {
  const brokers = inject('kafkaBrokers');
  if (!brokers) throw new Error('no Kafka broker for this run: test/kafka-global-setup.ts did not start one');
  const dir = await mkdtemp(join(tmpdir(), `ocdn-${label}-`));
  const offsets = [0, ...Array.from({ length: edges }, (_, i) => i + 1), 100, 169, 200];
  let state: ClusterState | undefined;
  try {
    state = await clusterUp({
      dir,
      edges,
      basePort: await freePortBlock(offsets),
      kafka: brokers,
      capacity: '64MB',
      console: true,
      // Its own topics: the sessions these tests make must not land in another test's cluster.
      telemetryNamespace: `${label}-${process.pid}-${Date.now().toString(36)}`,
      readyTimeoutMs: 90_000,
    });
    await seedIfEmpty(state, { ...seed, ladder: 'small' }, () => undefined);
    // Steering re-reads the catalog on its own clock; a steer for an unknown title makes it look now.
    const st = state;
    await waitFor(
      async () => {
        await (await fetch(`${st.steeringUrl}/v1/steer?title=title-0001`)).arrayBuffer();
        const res = await fetch(`${st.steeringUrl}/v1/catalog`);
        return res.ok && ((await res.json()) as Catalog).titles.length === seed.titles;
      },
      { timeoutMs: 30_000, intervalMs: 250, what: 'steering to serve the seeded catalog' },
    );
  } catch (err) {
    await clusterDown(dir).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  const c = state.components.find((x) => x.kind === 'console');
  if (!c) throw new Error('clusterUp started no console');
  return {
    state,
    console: c,
    dir,
    async stop() {
      await clusterDown(dir).catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Spends a fresh login URL; the session cookie ("name=value") it set. */
export async function login(cluster: ConsoleCluster): Promise<string> {
  const { url } = await mintLoginUrl(cluster.console.url, cluster.state.adminToken);
  const res = await fetch(url, { redirect: 'manual' });
  await res.arrayBuffer();
  const cookie = res.headers.get('set-cookie');
  if (res.status !== 302 || !cookie) throw new Error(`login answered ${res.status}`);
  return cookie.split(';')[0]!;
}

/**
 * Reads an event stream until the first message of type `event` and returns its data, parsed;
 * the connection is closed after.
 */
export async function firstEvent<T = unknown>(url: string, event: string, headers: Record<string, string>, timeoutMs = 20_000): Promise<T> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(new Error(`no "${event}" event from ${url} within ${timeoutMs} ms`)), timeoutMs);
  try {
    const res = await fetch(url, { headers: { accept: 'text/event-stream', ...headers }, signal: ac.signal });
    if (res.status !== 200) throw new Error(`${url} answered ${res.status}: ${await res.text()}`);
    const decoder = new TextDecoder();
    let buf = '';
    for await (const chunk of res.body!) {
      buf += decoder.decode(chunk as Uint8Array, { stream: true });
      for (let i = buf.indexOf('\n\n'); i !== -1; i = buf.indexOf('\n\n')) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const lines = block.split('\n');
        if (lines.includes(`event: ${event}`)) {
          const data = lines
            .filter((l) => l.startsWith('data: '))
            .map((l) => l.slice(6))
            .join('\n');
          return JSON.parse(data) as T;
        }
      }
    }
    throw new Error(`${url}: the stream ended before a "${event}" event`);
  } finally {
    clearTimeout(timer);
    ac.abort();
  }
}

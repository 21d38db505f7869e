/**
 * Free-port and port-in-use probes on this machine, and whether a process is alive: the one
 * copy for the cluster, Kafka, the benchmarks and the tests.
 */
import { createServer, type AddressInfo, type Server } from 'node:net';

/** True when something already listens on host:port. */
export function portInUse(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(true));
    srv.once('listening', () => srv.close(() => resolve(false)));
    srv.listen(port, host);
  });
}

/**
 * `n` distinct ports the kernel reports free (all bound at once, then released). Nothing holds
 * them afterwards: for "nothing listens here" cases, or for a server started right away.
 */
export async function freePorts(n: number, host = '127.0.0.1'): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<Server>((resolve, reject) => {
          const s = createServer();
          s.once('error', reject);
          s.listen(0, host, () => resolve(s));
        }),
    ),
  );
  const ports = servers.map((s) => (s.address() as AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

export async function freePort(host = '127.0.0.1'): Promise<number> {
  return (await freePorts(1, host))[0]!;
}

/**
 * A base port such that base + each offset is free, picked at random in [lo, lo + span) in steps
 * of `step`. Below the kernel's ephemeral range (32768+) by default, so other tests' port-0
 * servers cannot take one of them meanwhile.
 *
 * Free when looked at is not free when bound: a cluster's ports reach base + 200, so a block
 * picked by one test file can be taken by another's cluster starting at the same moment. Under a
 * test runner with parallel workers each worker therefore gets a lane of its own (vitest numbers
 * them in VITEST_POOL_ID); the files of one worker run one after another.
 */
export async function freePortBlock(offsets: readonly number[], opts: { lo?: number; span?: number; step?: number; tries?: number } = {}): Promise<number> {
  const lane = Math.min(3, Math.max(0, (Number(process.env.VITEST_POOL_ID) || 1) - 1));
  const laneSpan = 3_000;
  const lo = opts.lo ?? 20_000 + lane * laneSpan;
  const step = opts.step ?? 100;
  // A lane's bases stop 300 short of the next lane, so its blocks (up to base + 200) stay inside it.
  const slots = Math.max(1, Math.floor((opts.span ?? (opts.lo === undefined ? laneSpan - 300 : 12_000)) / step));
  for (let i = 0; i < (opts.tries ?? 20); i++) {
    const base = lo + Math.floor(Math.random() * slots) * step;
    let free = true;
    for (const o of offsets) if (await portInUse(base + o)) free = false;
    if (free) return base;
  }
  throw new Error(`no free block of ports ${offsets.join(', ')} above a base in ${lo}..${lo + slots * step}`);
}

/** Whether `pid` runs (EPERM: it runs, as another user). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

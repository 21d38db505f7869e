/**
 * CPU per access record on the edge's event loop (issue 15): AccessLog.served() for a response,
 * then the flush that packs the records and hands them to the spilling producer, which sends
 * them to a real broker. Measured in the same run against the loop with nothing recorded (the
 * baseline: the per-request strings only), so the difference is what recording costs a request.
 *
 *   npm run bench:access -- --brokers 127.0.0.1:19192 [--rounds 100] [--batch 4000] [--repeat 3]
 *
 * A broker: `ocdn kafka run --port 19192` (topics created at its start). The hit path itself is
 * measured by `npm run bench:edge -- --access`; this isolates the recording from its noise.
 */
import type { IncomingMessage } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createLogger } from '../../common/log.ts';
import { AccessLog } from '../../edge/access-log.ts';

const { values: a } = parseArgs({
  options: {
    brokers: { type: 'string', default: process.env.KAFKA_BROKERS ?? '127.0.0.1:19192' },
    rounds: { type: 'string', default: '100' },
    batch: { type: 'string', default: '4000' },
    repeat: { type: 'string', default: '3' },
  },
});
const rounds = Number(a.rounds);
const batch = Number(a.batch);
const work = await mkdtemp(join(tmpdir(), 'ocdn-bench-access-'));
// The timer is off: the loop flushes after every `batch` responses, as the timer would under load.
const log = new AccessLog({
  edgeId: 'edge-bench',
  brokers: a.brokers,
  spillFile: join(work, 'spill.jsonl'),
  log: createLogger('edge', { level: 'warn' }),
  flushMs: 1e9,
});
const req = { rawHeaders: ['Host', '127.0.0.1', 'User-Agent', 'wrk'], url: '' } as unknown as IncomingMessage;
const url = `/vod/title-0001/1100k/seg-00042.ts?CMCD=${encodeURIComponent('br=1100,d=4000,ot=v,sid="6e2f0c1d-2b8a-4c1e-9d51-0b7f3c2a9e11"')}`;
const none = (_r: IncomingMessage, _p: string, _q: string, _b: number) => undefined;

async function round(record: boolean): Promise<void> {
  for (let i = 0; i < batch; i++) {
    // New strings per request, as the HTTP parser makes them.
    const u = `${url}${''}`;
    const qi = u.indexOf('?');
    if (record) log.served(req, u.slice(0, qi), u.slice(qi + 1), 102_400 + i, 'ram');
    else none(req, u.slice(0, qi), u.slice(qi + 1), 102_400 + i);
  }
  if (record) log.flush();
  // Lets the producer's sends and their answers run, as the event loop would between requests.
  await new Promise((r) => setImmediate(r));
}

async function measure(record: boolean): Promise<number> {
  const c0 = process.cpuUsage();
  for (let i = 0; i < rounds; i++) await round(record);
  const c = process.cpuUsage(c0);
  return (c.user + c.system) / (rounds * batch);
}

for (let i = 0; i < 20; i++) await round(true);
process.stdout.write(`access records to ${a.brokers}: ${rounds} rounds of ${batch} responses, node ${process.version}\n`);
const rows: { base: number; rec: number }[] = [];
for (let r = 0; r < Number(a.repeat); r++) {
  const base = await measure(false);
  const rec = await measure(true);
  rows.push({ base, rec });
  process.stdout.write(
    `  run ${r + 1}: baseline ${base.toFixed(2)} µs/response, recorded ${rec.toFixed(2)} µs/response → recording ${(rec - base).toFixed(2)} µs\n`,
  );
}
const med = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
process.stdout.write(`median cost of one access record: ${med(rows.map((x) => x.rec - x.base)).toFixed(2)} µs of CPU\n`);
await log.close();
await rm(work, { recursive: true, force: true });

/**
 * A TCP proxy on 127.0.0.1 in front of a real Kafka broker that can lose the broker's answers to
 * produce requests: the request reaches the broker (which writes it), the answer never reaches
 * the client, whose connection is cut. That is what a broker dying between writing a batch and
 * answering looks like to a producer, made repeatable.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';

const PRODUCE_API_KEY = 0;

export interface FaultProxy {
  port: number;
  /** While on, every connection that sends a produce request is cut when the broker answers. */
  loseProduceAnswers(on: boolean): void;
  /** Produce requests whose answers were lost so far. */
  readonly lostAnswers: number;
  close(): Promise<void>;
}

export async function startFaultProxy(upstreamPort: number): Promise<FaultProxy> {
  let losing = false;
  let lost = 0;
  const sockets = new Set<Socket>();

  const server: Server = createServer((client) => {
    const upstream = connect(upstreamPort, '127.0.0.1');
    sockets.add(client).add(upstream);
    let pending: Buffer = Buffer.alloc(0);
    let produceSent = false;
    const cut = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('data', (chunk: Buffer) => {
      // Request frames: int32 size, then int16 api key.
      pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
      while (pending.length >= 6) {
        const size = pending.readInt32BE(0);
        if (pending.length < 4 + size) break;
        if (pending.readInt16BE(4) === PRODUCE_API_KEY && losing) produceSent = true;
        pending = pending.subarray(4 + size);
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (produceSent) {
        // The broker has answered, so it has written the batch: the client never hears of it.
        lost++;
        cut();
        return;
      }
      client.write(chunk);
    });
    for (const s of [client, upstream]) {
      s.on('error', cut);
      s.on('close', () => {
        sockets.delete(s);
        cut();
      });
    }
  });
  await new Promise<void>((res, rej) => {
    server.once('error', rej);
    server.listen(0, '127.0.0.1', () => res());
  });
  const port = (server.address() as import('node:net').AddressInfo).port;
  return {
    port,
    loseProduceAnswers(on) {
      losing = on;
    },
    get lostAnswers() {
      return lost;
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

import { describe, expect, it } from 'vitest';
import { waitFor } from '../../common/http.ts';
import { Shutdown } from '../../common/shutdown.ts';

describe('ordered graceful shutdown', () => {
  it('runs hooks by ascending order, once, even when run() is called again or concurrently', async () => {
    const ran: string[] = [];
    const s = new Shutdown()
      .add('close clients', () => void ran.push('clients'), 90)
      .add('stop accepting', () => void ran.push('accept'), 10)
      .add(
        'drain',
        async () => {
          await new Promise((r) => setImmediate(r));
          ran.push('drain');
        },
        20,
      );
    expect(s.started).toBe(false);
    await Promise.all([s.run('SIGTERM'), s.run('SIGINT')]);
    await s.run();
    expect(ran).toEqual(['accept', 'drain', 'clients']);
    expect(s.started).toBe(true);
  });

  it('a hook that hangs or throws is cut off and the later hooks still run', async () => {
    const ran: string[] = [];
    const s = new Shutdown({ hookTimeoutMs: 50 })
      .add('stuck', () => new Promise<void>(() => undefined), 1)
      .add(
        'broken',
        () => {
          throw new Error('boom');
        },
        2,
      )
      .add('last', () => void ran.push('last'), 3);
    await s.run();
    expect(ran).toEqual(['last']);
  });

  it('the first signal runs the hooks then exits 0; a second one exits 130 at once', async () => {
    const exits: number[] = [];
    let release: (() => void) | undefined;
    const s = new Shutdown({ hookTimeoutMs: 5_000 }).add('slow', () => new Promise<void>((r) => (release = r)));
    // Only the handlers installSignalHandlers adds are called: the test runner's own stay untouched.
    const before = { SIGTERM: process.listeners('SIGTERM'), SIGINT: process.listeners('SIGINT') };
    s.installSignalHandlers((c) => exits.push(c));
    const added = (sig: 'SIGTERM' | 'SIGINT') => process.listeners(sig).filter((l) => !before[sig].includes(l)) as ((sig: NodeJS.Signals) => void)[];
    const [onTerm, onInt] = [added('SIGTERM'), added('SIGINT')];
    try {
      expect(onTerm).toHaveLength(1);
      onTerm[0]!('SIGTERM');
      onInt[0]!('SIGINT');
      expect(exits).toEqual([130]);
      await waitFor(() => release !== undefined, { timeoutMs: 5_000, intervalMs: 1, what: 'the hook to start' });
      release!();
      await s.run();
      await new Promise((r) => setImmediate(r));
      expect(exits).toEqual([130, 0]);
    } finally {
      for (const l of onTerm) process.off('SIGTERM', l);
      for (const l of onInt) process.off('SIGINT', l);
    }
  });
});

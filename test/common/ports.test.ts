import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { describe, expect, it } from 'vitest';
import { freePort, freePortBlock, freePorts, isAlive, portInUse } from '../../common/ports.ts';

describe('ports and processes', () => {
  it('a free port is free until something listens on it', async () => {
    const port = await freePort();
    expect(await portInUse(port)).toBe(false);
    const srv = createServer();
    await new Promise<void>((r) => srv.listen(port, '127.0.0.1', r));
    try {
      expect(await portInUse(port)).toBe(true);
    } finally {
      await new Promise((r) => srv.close(r));
    }
  });

  it('freePorts gives distinct ports; freePortBlock a base whose offsets are all free', async () => {
    const ports = await freePorts(5);
    expect(new Set(ports).size).toBe(5);
    const base = await freePortBlock([0, 1, 7], { lo: 21_000, span: 2_000 });
    expect(base).toBeGreaterThanOrEqual(21_000);
    expect(base).toBeLessThan(23_000);
    for (const o of [0, 1, 7]) expect(await portInUse(base + o)).toBe(false);
  });

  it('isAlive: this process yes, an exited child no', async () => {
    expect(isAlive(process.pid)).toBe(true);
    const child = spawn(process.execPath, ['-e', '0']);
    const pid = child.pid!;
    await new Promise((r) => child.once('exit', r));
    expect(isAlive(pid)).toBe(false);
  });
});

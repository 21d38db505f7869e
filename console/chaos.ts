/**
 * The console's chaos buttons run the code `ocdn chaos` runs (scripts/chaos.ts) against the
 * cluster in the console's --dir, in this process: the page only asks, it never holds a pid, a
 * path or a credential. One action per target at a time.
 */
import { ErrorCodes, OcdnError } from '../common/errors.ts';
import { killEdge, originDown, restore } from '../scripts/chaos.ts';
import type { ConsoleChaosResult } from '../common/contracts.ts';

export type ChaosAction = 'kill-edge' | 'restore' | 'origin-outage-on' | 'origin-outage-off';

export class ChaosRunner {
  private readonly busy = new Set<string>();

  constructor(
    private readonly dir: string,
    private readonly onAction?: (action: ChaosAction, ok: boolean) => void,
  ) {}

  async run(action: ChaosAction, target: string): Promise<ConsoleChaosResult> {
    if (this.busy.has(target)) throw new OcdnError(ErrorCodes.TOO_MANY, `a chaos action on ${target} is still running; wait for it`);
    this.busy.add(target);
    const log: string[] = [];
    const say = (line: string) => void log.push(line);
    try {
      if (action === 'kill-edge') await killEdge(this.dir, { id: target, log: say });
      else if (action === 'restore') await restore(this.dir, target, say);
      else if (action === 'origin-outage-on') await originDown(this.dir, say);
      else await restore(this.dir, target, say);
      this.onAction?.(action, true);
      return { ok: true, action, target, log };
    } catch (err) {
      this.onAction?.(action, false);
      throw err;
    } finally {
      this.busy.delete(target);
    }
  }
}

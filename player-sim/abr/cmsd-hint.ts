import type { AbrState } from './types.ts';

/**
 * A CMSD-Dynamic (CTA-5006) hint from the edge that served the last segment, given to the ABR
 * only with `--abr-cmsd`. CTA-5006 says the client "SHOULD use [etp] as an adjunct to its own
 * throughput estimates", and that `du` asks clients to move load away from the server.
 *
 * Used by the throughput ABR:
 * - `etpBps`: the estimate becomes min(own estimate, etp): the server's view can only lower it,
 *   so an edge that overstates (ocdn's etp reads high on fast links) costs nothing.
 * - `duress`: never step up, and go one rung below the last one (the lowest stays the lowest).
 */
export interface CmsdHint {
  /** Estimated throughput the server reported (its `etp`), bits/s. */
  etpBps: number | undefined;
  /** The server reported duress (`du`). */
  duress: boolean;
}

/** The estimate to decide on: the hint's etp when it is lower. */
export function hintedEstimate(estimateBps: number, hint: CmsdHint | undefined): number {
  return hint?.etpBps !== undefined && hint.etpBps > 0 ? Math.min(estimateBps, hint.etpBps) : estimateBps;
}

/** `index` capped while the server is in duress: at most one rung below the last segment's. */
export function duressCap(index: number, s: Pick<AbrState, 'lastIndex' | 'cmsd'>): number {
  if (s.cmsd?.duress !== true) return index;
  return Math.min(index, Math.max(s.lastIndex - 1, 0));
}

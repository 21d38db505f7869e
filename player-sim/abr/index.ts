import { ErrorCodes, OcdnError } from '../../common/errors.ts';
import { BbaAbr } from './bba.ts';
import { BolaAbr } from './bola.ts';
import { DynamicAbr } from './dynamic.ts';
import { ThroughputAbr } from './throughput.ts';
import { ABR_NAMES, type Abr, type AbrName } from './types.ts';

export { ABR_NAMES, indexForBitrate, type Abr, type AbrName, type AbrState, type LastDownload } from './types.ts';
export { ThroughputEstimator } from './estimator.ts';
export { abandonTo, ABANDON_FACTOR } from './abandon.ts';
export { duressCap, hintedEstimate, type CmsdHint } from './cmsd-hint.ts';
export { BbaAbr, BolaAbr, DynamicAbr, ThroughputAbr };

/** A fresh algorithm instance (one per session: BOLA and dynamic keep per-session memory). */
export function createAbr(name: string): Abr {
  switch (name as AbrName) {
    case 'throughput':
      return new ThroughputAbr();
    case 'bba':
      return new BbaAbr();
    case 'bola':
      return new BolaAbr();
    case 'dynamic':
      return new DynamicAbr();
    default:
      throw new OcdnError(ErrorCodes.CONFIG, `unknown ABR "${name}" (use ${ABR_NAMES.join(', ')})`);
  }
}

import { BolaAbr } from './bola.ts';
import { capForBuffer } from './insufficient-buffer.ts';
import { ThroughputAbr, type ThroughputOptions } from './throughput.ts';
import type { Abr, AbrState } from './types.ts';

/**
 * dash.js's DYNAMIC strategy: rate-based while the buffer is short (it reacts fastest when
 * there is little to lose), BOLA once the buffer is deep (it uses the buffer to ride out
 * throughput noise). Between the two thresholds it keeps whichever it used last, so the mode
 * does not flap around a single threshold. Like dash.js's rules collection, it caps either
 * choice with the insufficient-buffer rule (see insufficient-buffer.ts), which is what makes
 * it safer than the plain rate rule right after a drop with a short buffer.
 */
export class DynamicAbr implements Abr {
  readonly name = 'dynamic' as const;
  private readonly throughput: ThroughputAbr;
  private readonly bola = new BolaAbr();
  private useBola = false;

  constructor(
    private readonly lowS = 9,
    private readonly highS = 18,
    throughputOpts: ThroughputOptions = {},
  ) {
    this.throughput = new ThroughputAbr(throughputOpts);
  }

  get mode(): 'throughput' | 'bola' {
    return this.useBola ? 'bola' : 'throughput';
  }

  decide(s: AbrState): number {
    if (s.bufferS >= this.highS) this.useBola = true;
    else if (s.bufferS < this.lowS) this.useBola = false;
    // BOLA applies the insufficient-buffer cap itself; dash.js applies it to the rate rule too.
    return this.useBola ? this.bola.decide(s) : capForBuffer(s, this.throughput.decide(s));
  }
}

/**
 * Mergeable quantile sketch for video start time: DDSketch (@datadog/sketches-js) with 1 %
 * relative accuracy, i.e. any reported quantile q is within ±1 % of the true value at rank q.
 * Serialised as base64 protobuf (the library's own format) inside the JSON partials.
 */
import { DDSketch } from '@datadog/sketches-js';

export const SKETCH_RELATIVE_ACCURACY = 0.01;

export type Sketch = DDSketch;

export function newSketch(): Sketch {
  return new DDSketch({ relativeAccuracy: SKETCH_RELATIVE_ACCURACY });
}

export function encodeSketch(s: Sketch): string | undefined {
  return s.count === 0 ? undefined : Buffer.from(s.toProto()).toString('base64');
}

export function decodeSketch(b64: string | undefined): Sketch {
  if (!b64) return newSketch();
  return DDSketch.fromProto(Buffer.from(b64, 'base64'));
}

export function quantile(s: Sketch, q: number): number | null {
  return s.count === 0 ? null : s.getValueAtQuantile(q);
}

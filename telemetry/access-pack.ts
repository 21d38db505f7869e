/**
 * Reading `ocdn.edge.access.v1` (issue 15): each line is an `EdgeAccessPack`, and each of its
 * tuples becomes an `EdgeAccess` for the join, or a refused record with its reason. A bad tuple
 * refuses itself, not the pack it came in; a pack whose envelope is wrong is refused whole.
 */
import {
  ACCESS_PACK_MAX_RECORDS,
  type EdgeAccess,
  type EdgeAccessPack,
  EdgeAccessPackSchema,
  type EdgeAccessTuple,
  EdgeAccessTupleSchema,
  titleOfAccessObject,
} from '../common/contracts.ts';
import { describeError } from '../common/errors.ts';
import { bodyValidator } from '../common/http.ts';
import type { RefusedEvent } from './ingest.ts';

const checkPack = bodyValidator(EdgeAccessPackSchema, 'edge access pack');
const checkTuple = bodyValidator(EdgeAccessTupleSchema, 'edge access record');
const checkEdge = bodyValidator(EdgeAccessPackSchema.properties.edge, 'edge access pack edge');

/** The accesses of one parsed line (`raw`: the line, for a refusal of the whole pack). */
export function accessesOfPack(value: unknown, raw: string): { accesses: EdgeAccess[]; bad: RefusedEvent[] } {
  const accesses: EdgeAccess[] = [];
  const bad: RefusedEvent[] = [];
  let pack: EdgeAccessPack;
  try {
    pack = checkPack(value);
  } catch (err) {
    const v = value as { edge?: unknown; records?: unknown } | null;
    const records = typeof v === 'object' && v !== null && Array.isArray(v.records) ? (v.records as unknown[]) : undefined;
    let edge: string | undefined;
    try {
      edge = records !== undefined && records.length >= 1 && records.length <= ACCESS_PACK_MAX_RECORDS ? checkEdge(v!.edge) : undefined;
    } catch {
      edge = undefined;
    }
    if (edge === undefined || records === undefined) return { accesses, bad: [{ reason: describeError(err).slice(0, 500), raw: raw.slice(0, 4_096) }] };
    for (const r of records) {
      try {
        expand(edge, checkTuple(r), accesses, bad);
      } catch (e) {
        bad.push({ reason: describeError(e).slice(0, 500), raw: JSON.stringify({ edge, records: [r] }).slice(0, 4_096) });
      }
    }
    return { accesses, bad };
  }
  for (const r of pack.records) expand(pack.edge, r, accesses, bad);
  return { accesses, bad };
}

function expand(edge: string, [sessionId, object, bytes, tier, ts]: EdgeAccessTuple, accesses: EdgeAccess[], bad: RefusedEvent[]): void {
  const title = titleOfAccessObject(object);
  if (title === undefined) {
    bad.push({
      reason: `invalid edge access record: object "${object.slice(0, 80)}" is not under /vod/<title>/`,
      raw: JSON.stringify({ edge, records: [[sessionId, object, bytes, tier, ts]] }).slice(0, 4_096),
    });
    return;
  }
  accesses.push({ sessionId, edge, title, object, bytes, tier, ts });
}

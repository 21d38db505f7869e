import { describe, expect, it } from 'vitest';
import { ACCESS_PACK_MAX_RECORDS, type EdgeAccessPack } from '../../common/contracts.ts';
import { packAccesses, type PendingAccess } from '../../edge/access-records.ts';
import { accessesOfPack } from '../../telemetry/access-pack.ts';
import { partitionFor } from '../../telemetry/partitioner.ts';
import { signPrefix } from '../../common/token.ts';

const cmcd = (sid: string) => encodeURIComponent(`br=730,ot=v,sid="${sid}"`);
const pending = (sid: string | undefined, path: string, i = 0): PendingAccess => ({
  path,
  cmcd: sid === undefined ? undefined : cmcd(sid),
  encoded: true,
  bytes: 1000 + i,
  tier: 'ram',
  ts: 1_700_000_000_000 + i,
});

describe('access packs: what an edge writes to ocdn.edge.access.v1 and what the aggregator reads back', () => {
  it('packs by partition, and every record comes back as it was served, with its title', () => {
    const sessions = Array.from({ length: 40 }, (_, i) => `s-${i}`);
    const batch = sessions.flatMap((s, i) => [pending(s, `/vod/title-${i % 3}/r/seg-1.ts`, i), pending(s, `/vod/title-${i % 3}/r/seg-2.ts`, i)]);
    const { packs, noSession, badPath } = packAccesses(batch, 'edge-1', (sid) => partitionFor(sid, 6));
    expect({ noSession, badPath }).toEqual({ noSession: 0, badPath: 0 });
    expect(packs.length).toBeLessThanOrEqual(6);
    const back = packs.flatMap((p) => {
      const parsed = JSON.parse(p.json) as EdgeAccessPack;
      // Every session of a pack sits in the partition of the pack's key.
      for (const [sid] of parsed.records) expect(partitionFor(sid, 6)).toBe(partitionFor(p.key, 6));
      expect(parsed.records.length).toBe(p.records);
      const r = accessesOfPack(parsed, p.json);
      expect(r.bad).toEqual([]);
      return r.accesses;
    });
    expect(back.sort((a, b) => a.object.localeCompare(b.object) || a.sessionId.localeCompare(b.sessionId))).toEqual(
      batch
        .map((p, i) => ({
          sessionId: sessions[Math.floor(i / 2)]!,
          edge: 'edge-1',
          title: /\/vod\/([^/]+)\//.exec(p.path)![1]!,
          object: p.path,
          bytes: p.bytes,
          tier: 'ram',
          ts: p.ts,
        }))
        .sort((a, b) => a.object.localeCompare(b.object) || a.sessionId.localeCompare(b.sessionId)),
    );
  });

  it('before the partition count is known, packs by session; large batches split under the record bound', () => {
    const batch = Array.from({ length: ACCESS_PACK_MAX_RECORDS * 2 + 5 }, (_, i) => pending(i % 2 === 0 ? 'a' : 'b', `/vod/t/r/seg-${i}.ts`, i));
    const { packs } = packAccesses(batch, 'edge-1', () => undefined);
    for (const p of packs) {
      const parsed = JSON.parse(p.json) as EdgeAccessPack;
      expect(new Set(parsed.records.map((r) => r[0]))).toEqual(new Set([p.key]));
      expect(parsed.records.length).toBeLessThanOrEqual(ACCESS_PACK_MAX_RECORDS);
    }
    expect(packs.reduce((n, p) => n + p.records, 0)).toBe(batch.length);
  });

  it('counts and drops what cannot be joined: no CMCD session, or not a /vod/<title>/ object', () => {
    const { packs, noSession, badPath } = packAccesses(
      [pending(undefined, '/vod/t/a.ts'), pending('s', '/catalog.json'), pending('s', '/vod/bad title/a.ts'), pending('s', '/vod/t/a.ts')],
      'edge-1',
      () => 0,
    );
    expect({ noSession, badPath, records: packs.reduce((n, p) => n + p.records, 0) }).toEqual({ noSession: 1, badPath: 2, records: 1 });
  });

  it('a bad record is refused alone, with its reason; a bad envelope refuses the pack', () => {
    const pack = {
      edge: 'edge-1',
      records: [
        ['s-1', '/vod/t/a.ts', 10, 'ram', 1],
        ['s-2', '/vod/t/b.ts', -5, 'ram', 2],
        ['s-3', '/vod/t/c.ts', 10, 'tape', 3],
        ['s-4', '/elsewhere/c.ts', 10, 'disk', 4],
        ['s-5', '/vod/t/d.ts', 10, 'disk'],
      ],
    };
    const r = accessesOfPack(pack, JSON.stringify(pack));
    expect(r.accesses.map((a) => a.sessionId)).toEqual(['s-1']);
    expect(r.bad.map((b) => JSON.parse(b.raw).records[0][0])).toEqual(['s-2', 's-3', 's-4', 's-5']);
    for (const b of r.bad) expect(b.reason).toMatch(/invalid edge access record/);
    expect(r.bad[2]!.reason).toMatch(/not under \/vod\/<title>\//);

    for (const wrong of [{ edge: 'edge 1', records: pack.records.slice(0, 1) }, { edge: 'edge-1', records: [] }, { edge: 'edge-1' }, [1, 2], 'x', null]) {
      const w = accessesOfPack(wrong, JSON.stringify(wrong));
      expect(w.accesses).toEqual([]);
      expect(w.bad).toHaveLength(1);
      expect(w.bad[0]!.reason).toMatch(/invalid edge access pack/);
    }
  });

  it("takes the session from a path token before CMCD's sid: hls.js makes up its own sid, steering signed the token's", () => {
    const token = signPrefix('secret-0123456789abcdef', '/vod/t/', 2_000_000_000, 'steer-sess-1');
    const fromToken = { ...pending(undefined, '/vod/t/a.ts'), tokenUrl: `/t/${token}/vod/t/a.ts` };
    const both = { ...pending('hlsjs-made-up', '/vod/t/b.ts'), tokenUrl: `/t/${token}/vod/t/b.ts?CMCD=x` };
    const sessionless = {
      ...pending('cmcd-sess', '/vod/t/c.ts'),
      tokenUrl: `/t/${signPrefix('secret-0123456789abcdef', '/vod/t/', 2_000_000_000)}/vod/t/c.ts`,
    };
    const { packs, noSession } = packAccesses([fromToken, both, sessionless], 'edge-1', () => undefined);
    expect(noSession).toBe(0);
    const sessions = packs.flatMap((p) => (JSON.parse(p.json) as EdgeAccessPack).records.map((r) => `${r[0]} ${r[1]}`)).sort();
    expect(sessions).toEqual(['cmcd-sess /vod/t/c.ts', 'steer-sess-1 /vod/t/a.ts', 'steer-sess-1 /vod/t/b.ts']);
  });
});

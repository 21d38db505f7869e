import { describe, expect, it } from 'vitest';
import { sessionOfToken, signPath, signPrefix, splitPathToken, tokenPath, verifyToken, withPathToken } from '../../common/token.ts';
import { TokenGate } from '../../edge/auth.ts';

const SECRET = 'unit-secret-0123456789';
const NOW_MS = 1_800_000_000_000;
const EXP = NOW_MS / 1000 + 600;

describe('path tokens', () => {
  const token = signPath(SECRET, '/vod/film/master.m3u8', EXP);

  it('splits /t/<token>/vod/... into the token and the object path; other paths pass through', () => {
    expect(splitPathToken(`/t/${token}/vod/film/730k/seg-00001.ts`)).toEqual({ ok: true, token, path: '/vod/film/730k/seg-00001.ts' });
    expect(splitPathToken('/vod/film/master.m3u8')).toEqual({ ok: true, token: undefined, path: '/vod/film/master.m3u8' });
    // The split is structural only: what follows still goes through the edge's path allow-list.
    expect(splitPathToken(`/t/${token}/etc/passwd`)).toEqual({ ok: true, token, path: '/etc/passwd' });
    expect(tokenPath('/vod/film/master.m3u8', token)).toBe(`/t/${token}/vod/film/master.m3u8`);
    expect(tokenPath('/vod/film/master.m3u8', undefined)).toBe('/vod/film/master.m3u8');
    expect(withPathToken('http://e:1', '/vod/film/a.ts', token)).toBe(`http://e:1/t/${token}/vod/film/a.ts`);
  });

  it('refuses a malformed /t/ segment with a reason', () => {
    for (const p of ['/t/', `/t/${token}`, '/t//vod/film/a.ts', '/t/a%2Fb/vod/film/a.ts', `/t/${'1'.repeat(161)}/vod/film/a.ts`, '/t/a b/vod/film/a.ts']) {
      const r = splitPathToken(p);
      expect(r.ok, p).toBe(false);
      if (!r.ok) expect(r.reason).toMatch(/malformed path token/);
    }
  });

  it('survives standard relative resolution (new URL(ref, base)) where a query token does not', () => {
    const master = withPathToken('http://127.0.0.1:9400', '/vod/film/master.m3u8', token);
    const media = new URL('730k/index.m3u8', master);
    const seg = new URL('seg-00000.m4s', media);
    const init = new URL('../730k/init.mp4', media);
    for (const u of [media, seg, init]) {
      const s = splitPathToken(u.pathname);
      expect(s.ok && s.token).toBe(token);
      if (s.ok) expect(verifyToken(SECRET, s.path, s.token, NOW_MS / 1000)).toEqual({ ok: true, expires: EXP });
    }
    expect(new URL('730k/index.m3u8', `http://127.0.0.1:9400/vod/film/master.m3u8?token=${token}`).search).toBe('');
  });

  it('a split token is checked like any other: malformed, expired, other title, forged → refused (the edge answers 403)', () => {
    const gate = new TokenGate(SECRET);
    const check = (p: string, nowMs = NOW_MS) => {
      const s = splitPathToken(p);
      if (!s.ok) return s.reason;
      return gate.check(s.path, s.token, nowMs);
    };
    expect(check(`/t/${token}/vod/film/730k/seg-00000.ts`)).toBeUndefined();
    expect(check('/t/12345/vod/film/730k/seg-00000.ts')).toMatch(/malformed token/);
    expect(check(`/t/${signPath(SECRET, '/vod/film/x', NOW_MS / 1000 - 1)}/vod/film/a.ts`)).toMatch(/expired/);
    expect(check(`/t/${token}/vod/film/a.ts`, (EXP + 1) * 1000)).toMatch(/expired/);
    expect(check(`/t/${signPath(SECRET, '/vod/other/x', EXP)}/vod/film/a.ts`)).toMatch(/invalid token signature/);
    expect(check(`/t/${signPath('another-secret-xyz', '/vod/film/x', EXP)}/vod/film/a.ts`)).toMatch(/invalid token signature/);
    expect(check('/t/x')).toMatch(/malformed path token/);
  });

  it("a token may name its session, signed with the rest: any player's requests then carry it, and it cannot be swapped", () => {
    const withSession = signPrefix(SECRET, '/vod/film/', EXP, 'Q2xr-abc_123');
    expect(withSession).toMatch(/^\d+\.Q2xr-abc_123\.[0-9a-f]{64}$/);
    expect(sessionOfToken(withSession)).toBe('Q2xr-abc_123');
    expect(sessionOfToken(token)).toBeUndefined();
    const seg = new URL('730k/seg-00000.ts', withPathToken('http://127.0.0.1:9400', '/vod/film/master.m3u8', withSession));
    const s = splitPathToken(seg.pathname);
    expect(s.ok && verifyToken(SECRET, s.path, s.token, NOW_MS / 1000)).toEqual({ ok: true, expires: EXP, session: 'Q2xr-abc_123' });
    const swapped = withSession.replace('Q2xr-abc_123', 'someone-else');
    expect(verifyToken(SECRET, '/vod/film/a.ts', swapped, NOW_MS / 1000)).toEqual({ ok: false, reason: 'invalid-signature' });
    expect(new TokenGate(SECRET).check('/vod/film/a.ts', withSession, NOW_MS)).toBeUndefined();
    expect(() => signPrefix(SECRET, '/vod/film/', EXP, 'has.dots')).toThrow(/token session/);
  });
});

import { describe, expect, it } from 'vitest';
import { parseCmcd, parseCmcdInto, type Cmcd } from '../../edge/cmcd.ts';
import { checkPath, contentTypeFor, queryArg, titleOf } from '../../edge/path.ts';
import { etagMatches, parseRange } from '../../edge/range.ts';
import { playlistUris } from '../../edge/admin.ts';

describe('path allow-list', () => {
  it.each([
    '/vod/title-0001/master.m3u8',
    '/vod/title-0001/730k/index.m3u8',
    '/vod/t/730k/seg-00001.ts',
    '/vod/t/a_b.c-d/init.mp4',
    '/vod/t/...x', // three dots is a name, not a dot segment
  ])('accepts %s', (p) => expect(checkPath(p)).toBeUndefined());

  it.each([
    ['/vod/../x', /dot segments/],
    ['/vod/t/../../etc/passwd', /dot segments/],
    ['/vod/t/./x', /dot segments/],
    ['/vod/t/%2e%2e/x', /percent/],
    ['/vod/t%2fx/y', /percent/],
    ['/vod/t/x%00.ts', /percent/],
    ['/vod/t/x\u0000.ts', /only contain/],
    ['/vod/t//x', /empty/],
    ['/vod/t/', /empty/],
    ['/vod/t', /must name an object/],
    ['/vod/t/a\\b', /only contain/],
    ['/vod/t/ä.ts', /only contain/],
    ['/catalog.json', /only \/vod/],
    [`/vod/t/${'a'.repeat(600)}`, /longer than/],
  ])('refuses %s', (p, why) => expect(checkPath(p)).toMatch(why));

  it('knows titles and content types', () => {
    expect(titleOf('/vod/title-7/730k/seg-00001.ts')).toBe('title-7');
    expect(contentTypeFor('/vod/t/master.m3u8')).toBe('application/vnd.apple.mpegurl');
    expect(contentTypeFor('/vod/t/r/seg-00001.ts', 'application/octet-stream')).toBe('video/mp2t');
    expect(contentTypeFor('/vod/t/r/seg-00001.m4s')).toBe('video/mp4');
    expect(contentTypeFor('/vod/t/r/init.mp4')).toBe('video/mp4');
    expect(contentTypeFor('/vod/t/r/x.bin', 'application/x-thing')).toBe('application/x-thing');
    expect(contentTypeFor('/vod/t/r/x.bin')).toBe('application/octet-stream');
  });

  it('reads one query argument without decoding it', () => {
    expect(queryArg('token=1.ab&CMCD=br%3D1', 'token')).toBe('1.ab');
    expect(queryArg('xtoken=1&token=2', 'token')).toBe('2');
    expect(queryArg('token=', 'token')).toBe('');
    expect(queryArg('tokens=5', 'token')).toBeUndefined();
    expect(queryArg('', 'token')).toBeUndefined();
    expect(queryArg('a=1&CMCD=br%3D1', 'CMCD')).toBe('br%3D1');
  });
});

describe('Range and If-None-Match', () => {
  it.each([
    ['bytes=0-9', 100, { start: 0, end: 9 }],
    ['bytes=90-', 100, { start: 90, end: 99 }],
    ['bytes=-10', 100, { start: 90, end: 99 }],
    ['bytes=-1000', 100, { start: 0, end: 99 }],
    ['bytes=50-1000', 100, { start: 50, end: 99 }],
    ['bytes=100-', 100, 'unsatisfiable'],
    ['bytes=-0', 100, 'unsatisfiable'],
    ['bytes=9-0', 100, undefined],
    ['bytes=0-1,5-6', 100, undefined],
    ['items=0-1', 100, undefined],
    ['bytes=abc', 100, undefined],
  ] as const)('%s of %d bytes', (h, size, want) => expect(parseRange(h, size)).toEqual(want));

  it('matches ETags weakly, lists and *', () => {
    const e = '"abc"';
    expect(etagMatches('"abc"', e)).toBe(true);
    expect(etagMatches('W/"abc"', e)).toBe(true);
    expect(etagMatches('"x", "abc"', e)).toBe(true);
    expect(etagMatches('*', e)).toBe(true);
    expect(etagMatches('"abd"', e)).toBe(false);
    expect(etagMatches('abc', e)).toBe(false);
  });
});

describe('CMCD parsing', () => {
  it('parses the query form with every value type', () => {
    const q = encodeURIComponent(
      'br=3200,bs,d=4004,mtp=25400,ot=v,rtp=15000,sid="6e2fb550-c457-11e9-bb97-0800200c9a66",sf=h,st=v,su,tb=6000,pr=1.5,cid="movie \\"x\\""',
    );
    expect(parseCmcd(q, {})).toEqual({
      br: 3200,
      bs: true,
      d: 4004,
      mtp: 25400,
      ot: 'v',
      rtp: 15000,
      sid: '6e2fb550-c457-11e9-bb97-0800200c9a66',
      sf: 'h',
      st: 'v',
      su: true,
      tb: 6000,
      pr: 1.5,
      cid: 'movie "x"',
    });
  });

  it('parses the header form (all four headers)', () => {
    const c = parseCmcd(undefined, {
      'cmcd-request': 'bl=21300,mtp=48100',
      'cmcd-object': 'br=3200,d=4004,ot=v',
      'cmcd-status': 'bs',
      'cmcd-session': 'sid="s1",v=1',
    });
    expect(c).toEqual({ bl: 21300, mtp: 48100, br: 3200, d: 4004, ot: 'v', bs: true, sid: 's1', v: 1 });
  });

  it('drops malformed pairs and keeps the rest, never throws', () => {
    const into: Cmcd = {};
    parseCmcdInto('br=abc,bl=100,ot=zz,sid=unquoted,d="4",=5,BR=1,su=1,com.example-x=7,weird', into);
    expect(into).toEqual({ bl: 100, 'com.example-x': 7 });
    expect(parseCmcd('%ZZ', {})).toBeUndefined();
    expect(parseCmcd(encodeURIComponent('sid="unterminated'), {})).toBeUndefined();
    expect(parseCmcd('x'.repeat(10_000), {})).toBeUndefined();
    expect(parseCmcd(undefined, { 'cmcd-request': ',,,' })).toBeUndefined();
  });
});

describe('playlist URIs (fill)', () => {
  it('finds URI lines and URI attributes', () => {
    const master =
      '#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-STREAM-INF:BANDWIDTH=800000\n730k/index.m3u8\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="a",NAME="en",URI="audio/index.m3u8"\n';
    expect(playlistUris(master)).toEqual(['730k/index.m3u8', 'audio/index.m3u8']);
    const media = '#EXTM3U\n#EXT-X-MAP:URI="init.mp4"\n#EXTINF:4.0,\nseg-00000.m4s\n#EXT-X-ENDLIST\n';
    expect(playlistUris(media)).toEqual(['init.mp4', 'seg-00000.m4s']);
  });
});

describe('token gate', () => {
  it('remembers a good token per title but still expires it, and never remembers failures', async () => {
    const { TokenGate } = await import('../../edge/auth.ts');
    const { signPath } = await import('../../common/token.ts');
    const gate = new TokenGate('s3cret-s3cret');
    const now = Date.now();
    const exp = Math.floor(now / 1000) + 10;
    const tok = signPath('s3cret-s3cret', '/vod/t/a.ts', exp);
    expect(gate.check('/vod/t/a.ts', tok, now)).toBeUndefined();
    expect(gate.check('/vod/t/b/c.ts', tok, now)).toBeUndefined(); // same title prefix
    expect(gate.check('/vod/u/a.ts', tok, now)).toMatch(/invalid token signature/);
    expect(gate.check('/vod/t/a.ts', tok, (exp + 1) * 1000)).toMatch(/expired/);
    expect(gate.check('/vod/t/a.ts', undefined, now)).toMatch(/missing/);
  });
});

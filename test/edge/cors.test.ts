/**
 * Browser-grade CORS on a real edge (issue 13): every answer, errors included, lets a page of
 * another origin read it; OPTIONS is a preflight answered 204 on any path; an allow-list echoes
 * a listed Origin with Vary: Origin and refuses other preflights with the common 403.
 */
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signPath } from '../../common/token.ts';
import { type Edge, startEdge } from '../../edge/server.ts';
import { call, curlPreflight, expectCors, expectNoCors, expectPreflight, PREFLIGHT } from '../cors-client.ts';
import { expectErrorBody } from '../error-body.ts';
import { bytes, metric, sha256, startOrigin, type TestOrigin } from './helpers.ts';

const SECRET = 'test-secret-cors-0123456789';
const SEG = '/vod/c1/730k/seg-00000.ts';
const PLAYLIST = '/vod/c1/730k/index.m3u8';
const LISTED = ['https://player.example', 'http://localhost:8080'];

/** Writes `bytes` on a fresh connection and reads until the server closes it. */
function raw(base: string, bytes: string): Promise<{ head: string[]; body: string }> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const s = connect(Number(u.port), u.hostname, () => s.write(bytes));
    let got = '';
    s.on('data', (d: Buffer) => (got += d.toString('latin1')));
    s.on('error', reject);
    s.on('close', () => {
      const at = got.indexOf('\r\n\r\n');
      resolve({ head: got.slice(0, at).split('\r\n'), body: got.slice(at + 4) });
    });
  });
}

describe('edge CORS', () => {
  let origin: TestOrigin;
  let any: Edge; // '*', tokens on
  let listed: Edge; // allow-list, tokens off
  const seg = bytes(100_000, 21);
  const token = () => signPath(SECRET, SEG, Math.floor(Date.now() / 1000) + 600);
  const signed = (path: string) => `${path}?token=${encodeURIComponent(token())}`;

  beforeAll(async () => {
    origin = await startOrigin();
    await origin.put(SEG.slice(1), seg);
    await origin.put(PLAYLIST.slice(1), '#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.0,\nseg-00000.ts\n#EXT-X-ENDLIST\n');
    any = await startEdge({ id: 'cors-any', region: 'us-east', capacityBytes: 10_000_000, origin: origin.reader, tokenSecret: SECRET });
    listed = await startEdge({ id: 'cors-list', region: 'us-east', capacityBytes: 10_000_000, origin: origin.reader, tokenSecret: null, corsOrigins: LISTED });
  });

  afterAll(async () => {
    await any?.close();
    await listed?.close();
    await origin?.close();
  });

  it("puts ACAO '*' and the exposed headers on a miss, a hit, a 206, a 304 and a HEAD", async () => {
    const o = { headers: { origin: PREFLIGHT.origin } };
    const miss = await call(any.url, signed(SEG), o);
    expect([miss.status, miss.headers['x-cache']]).toEqual([200, 'MISS']);
    expectCors(miss);
    const hit = await call(any.url, signed(SEG), o);
    expect([hit.status, hit.headers['x-cache']]).toEqual([200, 'HIT']);
    expect(hit.body.equals(seg)).toBe(true);
    expectCors(hit);
    // Without an Origin too: '*' answers do not depend on the request.
    expectCors(await call(any.url, signed(SEG)));
    const range = await call(any.url, signed(SEG), { headers: { ...o.headers, range: 'bytes=10-19' } });
    expect([range.status, range.headers['content-range']]).toEqual([206, `bytes 10-19/${seg.length}`]);
    expect(range.body.equals(seg.subarray(10, 20))).toBe(true);
    expectCors(range);
    const notModified = await call(any.url, signed(SEG), { headers: { ...o.headers, 'if-none-match': `"${sha256(seg)}"` } });
    expect(notModified.status).toBe(304);
    expectCors(notModified);
    const head = await call(any.url, signed(SEG), { ...o, method: 'HEAD' });
    expect([head.status, head.body.length]).toEqual([200, 0]);
    expectCors(head);
    const unsatisfiable = await call(any.url, signed(SEG), { headers: { range: `bytes=${seg.length + 10}-` } });
    expect(unsatisfiable.status).toBe(416);
    expectCors(unsatisfiable);
  });

  it('puts them on every error and on /healthz, /readyz, /metrics, /catalog.json', async () => {
    const cases: [string, number, string | undefined][] = [
      [SEG, 403, 'E_FORBIDDEN'], // no token
      [`${SEG}?token=1.bad`, 403, 'E_FORBIDDEN'],
      ['/vod/c1/730k/../../etc/passwd', 400, 'E_BAD_REQUEST'],
      ['/vod/c1/730k/seg%2F00000.ts', 400, 'E_BAD_REQUEST'],
      ['/nope', 404, 'E_NOT_FOUND'],
      ['/healthz', 200, undefined],
      ['/readyz', 200, undefined],
      ['/metrics', 200, undefined],
    ];
    for (const [path, status, code] of cases) {
      const a = await call(any.url, path, { headers: { origin: PREFLIGHT.origin } });
      expect(a.status, path).toBe(status);
      if (code) expectErrorBody(a.body, code as 'E_FORBIDDEN');
      expectCors(a);
    }
    // A negative-cached 404 from the origin (signed, so it reaches the cache), twice: the second is a hit.
    const missing = `/vod/c1/730k/seg-00009.ts?token=${encodeURIComponent(signPath(SECRET, '/vod/c1/730k/seg-00009.ts', Math.floor(Date.now() / 1000) + 600))}`;
    for (const cache of ['MISS', 'HIT']) {
      const a = await call(any.url, missing);
      expect([a.status, a.headers['x-cache']]).toEqual([404, cache]);
      expectErrorBody(a.body, 'E_NOT_FOUND');
      expectCors(a);
    }
    const method = await call(any.url, signed(SEG), { method: 'POST', body: 'x' });
    expect(method.status).toBe(405);
    expectCors(method);
    // The catalog route (no catalog.json in this bucket: its 404 is still readable by a page).
    const catalog = await call(any.url, '/catalog.json');
    expectCors(catalog);
  });

  it('answers OPTIONS on any path as a preflight (204) allowing Range and CMCD-*, from undici and from curl', async () => {
    for (const path of [SEG, signed(SEG), PLAYLIST, '/nope', '/metrics', '/admin/purge', '*']) {
      const a = await call(any.url, path, { method: 'OPTIONS', headers: PREFLIGHT });
      expectPreflight(a, 'GET, HEAD');
      expect(a.headers['x-edge-id']).toBe('cors-any');
    }
    const res = await fetch(`${any.url}${SEG}`, { method: 'OPTIONS', headers: PREFLIGHT });
    expect(res.status).toBe(204);
    expect(res.headers.get('access-control-allow-methods')).toBe('GET, HEAD');
    const curl = await curlPreflight(`${any.url}${SEG}`);
    expectPreflight(curl, 'GET, HEAD');
  });

  it('with an allow-list: echoes a listed Origin per request with Vary: Origin, on hits too', async () => {
    const first = await call(listed.url, SEG, { headers: { origin: LISTED[0]! } });
    expect(first.headers['x-cache']).toBe('MISS');
    expectCors(first, LISTED[0]);
    // Hits alternate between the two listed origins: each gets its own, nothing leaks between them.
    for (const o of [LISTED[1]!, LISTED[0]!, LISTED[1]!]) {
      const hit = await call(listed.url, SEG, { headers: { origin: o } });
      expect(hit.headers['x-cache']).toBe('HIT');
      expectCors(hit, o);
    }
    expectCors(await call(listed.url, SEG, { headers: { origin: LISTED[1]!, range: 'bytes=0-9' } }), LISTED[1]);
    expectCors(await call(listed.url, '/nope', { headers: { origin: LISTED[0]! } }), LISTED[0]);
    // Unlisted or absent Origin: served, but not readable by the page; caches still told it varies.
    const unlisted = await call(listed.url, SEG, { headers: { origin: 'https://evil.example' } });
    expect(unlisted.status).toBe(200);
    expectNoCors(unlisted);
    expectNoCors(await call(listed.url, SEG));
    expectNoCors(await call(listed.url, '/vod/bad/../x', { headers: { origin: 'https://evil.example' } }));
    // A listed origin's preflight is allowed and echoed.
    expectPreflight(await call(listed.url, SEG, { method: 'OPTIONS', headers: { ...PREFLIGHT, origin: LISTED[1]! } }), 'GET, HEAD', LISTED[1]);
    expectPreflight(await curlPreflight(`${listed.url}${SEG}`, LISTED[0]), 'GET, HEAD', LISTED[0]);
  });

  it('with an allow-list: refuses the preflight of an unlisted Origin with the common 403', async () => {
    const a = await call(listed.url, SEG, { method: 'OPTIONS', headers: { ...PREFLIGHT, origin: 'https://evil.example' } });
    expect(a.status).toBe(403);
    expectErrorBody(a.body, 'E_FORBIDDEN', /origin https:\/\/evil\.example may not read/);
    expectNoCors(a);
    const curl = await curlPreflight(`${listed.url}/metrics`, 'https://evil.example');
    expect(curl.status).toBe(403);
    expectErrorBody(curl.body, 'E_FORBIDDEN');
    expect(curl.headers['access-control-allow-origin']).toBeUndefined();
    expect(await metric(listed, 'ocdn_http_preflights_total', { result: 'refused' })).toBe(2);
  });

  it('refuses to start with an origin that could never match', async () => {
    await expect(
      startEdge({ id: 'cors-bad', region: 'x', capacityBytes: 1_000_000, origin: origin.reader, tokenSecret: null, corsOrigins: ['https://player.example/'] }),
    ).rejects.toThrow(/is not an origin/);
  });
  it("answers heads Node's parser refuses (too large, malformed) with the common error body and CORS", async () => {
    const big = await raw(any.url, `GET ${SEG} HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
    expect(big.head[0]).toBe('HTTP/1.1 431 Request Header Fields Too Large');
    expect(big.head).toContain('access-control-allow-origin: *');
    expectErrorBody(Buffer.from(big.body), 'E_HEADERS_TOO_LARGE');
    const garbage = await raw(any.url, 'NOT HTTP AT ALL\r\n\r\n');
    expect(garbage.head[0]).toBe('HTTP/1.1 400 Bad Request');
    expect(garbage.head).toContain('access-control-allow-origin: *');
    expectErrorBody(Buffer.from(garbage.body), 'E_BAD_REQUEST', /malformed request/);
    expect(await metric(any, 'ocdn_http_requests_refused_total', { reason: 'head_too_large' })).toBe(1);
    expect(await metric(any, 'ocdn_http_requests_refused_total', { reason: 'bad_head' })).toBe(1);
  });
});

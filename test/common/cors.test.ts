import { describe, expect, it } from 'vitest';
import { CORS_EXPOSE_HEADERS, corsOriginsOption, corsPolicy, parseCorsOrigins, withCors } from '../../common/cors.ts';

describe('CORS policy (common/cors.ts)', () => {
  it("parses '*' or a list of exact origins, and refuses what could never match an Origin header", () => {
    expect(parseCorsOrigins('*')).toBe('*');
    expect(parseCorsOrigins(' * ')).toBe('*');
    expect(parseCorsOrigins('https://a.example, http://localhost:8080,https://a.example')).toEqual(['https://a.example', 'http://localhost:8080']);
    expect(() => parseCorsOrigins('')).toThrow(/give '\*'/);
    expect(() => parseCorsOrigins('*,https://a.example')).toThrow(/cannot be combined/);
    for (const bad of ['https://a.example/', 'https://a.example/path', 'a.example', 'ftp://a.example', 'null', 'https://A.example'])
      expect(() => parseCorsOrigins(bad), bad).toThrow(/is not an origin/);
    const problems: string[] = [];
    expect(corsOriginsOption('https://ok.example,https://bad.example/', problems)).toBeUndefined();
    expect(problems).toEqual([expect.stringMatching(/^--cors-origins \(or OCDN_CORS_ORIGINS\): "https:\/\/bad\.example\/" is not an origin/)]);
  });

  it("gives '*' fields that never depend on the request, and per-Origin fields for a list", () => {
    const any = corsPolicy();
    expect(any.methods).toBe('GET, HEAD, POST');
    expect(any.fields(undefined)).toBe(any.fixed);
    expect(any.fields('https://x.example')).toEqual({ 'access-control-allow-origin': '*', 'access-control-expose-headers': CORS_EXPOSE_HEADERS });
    const list = corsPolicy({ origins: ['https://a.example'], methods: ['GET', 'HEAD'] });
    expect(list.fixed).toEqual({ vary: 'Origin' });
    expect(list.fields('https://a.example')).toEqual({
      'access-control-allow-origin': 'https://a.example',
      'access-control-expose-headers': CORS_EXPOSE_HEADERS,
      vary: 'Origin',
    });
    expect(list.fields('https://b.example')).toEqual({ vary: 'Origin' });
    expect(list.allows(undefined)).toBe(false);
    expect(() => corsPolicy({ origins: ['https://a.example/'] })).toThrow(/is not an origin/);
  });

  it('adds only missing fields, never changes the object it is given, and appends Origin to an existing Vary', () => {
    const fields = corsPolicy({ origins: ['https://a.example'] }).fields('https://a.example');
    const prebuilt = Object.freeze({ 'content-type': 'text/plain', ...fields });
    expect(withCors(prebuilt, fields)).toBe(prebuilt);
    const plain = Object.freeze({ 'content-type': 'text/plain', vary: 'Accept-Encoding' });
    expect(withCors(plain, fields)).toEqual({ ...fields, 'content-type': 'text/plain', vary: 'Accept-Encoding, Origin' });
    expect(withCors({ vary: 'origin' }, fields)).toMatchObject({ vary: 'origin' });
    expect(withCors(undefined, fields)).toEqual(fields);
    expect(withCors(['content-type', 'text/plain', 'Access-Control-Allow-Origin', 'https://a.example'], fields)).toEqual([
      'content-type',
      'text/plain',
      'Access-Control-Allow-Origin',
      'https://a.example',
      'access-control-expose-headers',
      CORS_EXPOSE_HEADERS,
      'vary',
      'Origin',
    ]);
  });
});

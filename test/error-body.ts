import { Value } from '@sinclair/typebox/value';
import { expect } from 'vitest';
import { type ErrorBody, ErrorBodySchema } from '../common/contracts.ts';
import type { ErrorCode } from '../common/errors.ts';

/**
 * Asserts that a response body is the one error body of every service (common/contracts.ts
 * ErrorBodySchema) with this code and a one-line message matching `message`; returns it.
 */
export function expectErrorBody(body: string | Buffer, code: ErrorCode, message?: RegExp): ErrorBody {
  const text = body.toString();
  const parsed = JSON.parse(text) as unknown;
  expect(Value.Check(ErrorBodySchema, parsed), text).toBe(true);
  const b = parsed as ErrorBody;
  expect(b.error.code, text).toBe(code);
  expect(b.error.message).not.toMatch(/\n/);
  if (message) expect(b.error.message).toMatch(message);
  return b;
}

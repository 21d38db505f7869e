import { readFileSync } from 'node:fs';
import type { ContextKey, ContextValues } from './cluster-context.ts';

/**
 * A secret comes from a file (`--x-file PATH`), else the environment, else the running
 * cluster's context (cluster.json, 0600): never from a command-line value, which `ps` shows
 * to every local user.
 */
export interface SecretSpec {
  /** For messages, e.g. "token secret". */
  what: string;
  /** The file flag as typed, e.g. "--token-secret-file". */
  fileFlag: string;
  env: string;
  ctx: ContextKey;
  /** Shortest acceptable value. */
  minLength?: number;
}

export interface Secret {
  value: string;
  source: 'file' | 'env' | 'context';
}

/**
 * Resolves one secret; pushes a problem (and returns undefined) when the file cannot be read or
 * the value is too short; returns undefined without a problem when it is given nowhere.
 */
export function resolveSecret(
  spec: SecretSpec,
  file: unknown,
  problems: string[],
  env: NodeJS.ProcessEnv = process.env,
  ctx: Partial<ContextValues> = {},
): Secret | undefined {
  let secret: Secret | undefined;
  if (typeof file === 'string' && file !== '') {
    try {
      // One trailing newline is what `echo` and editors add; the secret is the rest.
      secret = { value: readFileSync(file, 'utf8').replace(/\r?\n$/, ''), source: 'file' };
    } catch (err) {
      problems.push(`${spec.fileFlag}: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
      return undefined;
    }
  } else if (env[spec.env] !== undefined && env[spec.env] !== '') secret = { value: env[spec.env]!, source: 'env' };
  else {
    const v = ctx[spec.ctx];
    if (typeof v === 'string' && v !== '') secret = { value: v, source: 'context' };
  }
  if (secret === undefined) return undefined;
  if (secret.value.trim() === '' || secret.value.length < (spec.minLength ?? 1)) {
    problems.push(
      `${spec.what} (${secret.source === 'file' ? spec.fileFlag : secret.source === 'env' ? spec.env : 'cluster.json'}): use at least ${spec.minLength ?? 1} characters`,
    );
    return undefined;
  }
  return secret;
}

/** resolveSecret, and a problem naming where it was looked for (and `optOut`) when it is given nowhere. */
export function requireSecret(
  spec: SecretSpec,
  file: unknown,
  problems: string[],
  optOut: string,
  env: NodeJS.ProcessEnv = process.env,
  ctx: Partial<ContextValues> = {},
): Secret | undefined {
  const before = problems.length;
  const secret = resolveSecret(spec, file, problems, env, ctx);
  if (secret === undefined && problems.length === before)
    problems.push(
      `${/^[aeiou]/.test(spec.what) ? 'an' : 'a'} ${spec.what} is required: give ${spec.fileFlag} PATH, env ${spec.env}, or run in a cluster whose cluster.json has one; ${optOut}`,
    );
  return secret;
}

export const TOKEN_SECRET: SecretSpec = { what: 'token secret', fileFlag: '--token-secret-file', env: 'OCDN_TOKEN_SECRET', ctx: 'tokenSecret', minLength: 8 };
export const ADMIN_TOKEN: SecretSpec = { what: 'admin token', fileFlag: '--admin-token-file', env: 'OCDN_ADMIN_TOKEN', ctx: 'adminToken', minLength: 8 };
export const EDGE_KEY: SecretSpec = { what: 'edge key', fileFlag: '--edge-key-file', env: 'OCDN_EDGE_KEY', ctx: 'edgeKey', minLength: 16 };

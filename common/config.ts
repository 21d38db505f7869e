import type { ContextKey } from './cluster-context.ts';
import { ErrorCodes, OcdnError } from './errors.ts';
import { parseBitrate, parseBytes, parseDuration } from './units.ts';

/**
 * A field of a component's configuration: where it comes from (flag, then env, then default)
 * and how to check it. Loading checks every field and reports every problem at once, so a
 * user fixes a bad command line in one go rather than one error per run.
 */
export type FieldSpec =
  | ({ type: 'string'; default?: string; pattern?: RegExp } & Common)
  | ({ type: 'int'; default?: number; min?: number; max?: number } & Common)
  | ({ type: 'number'; default?: number; min?: number; max?: number } & Common)
  | ({ type: 'bytes'; default?: number | string; min?: number } & Common)
  | ({ type: 'duration'; default?: number | string; min?: number } & Common) // result in ms
  | ({ type: 'bitrate'; default?: string } & Common) // result in bit/s
  | ({ type: 'bool'; default?: boolean } & Common)
  | ({ type: 'url'; default?: string } & Common)
  | ({ type: 'urls'; default?: string[] } & Common) // comma-separated http(s) URLs
  | ({ type: 'enum'; values: readonly string[]; default?: string } & Common)
  | ({ type: 'list'; default?: string[] } & Common); // comma-separated

interface Common {
  /** Flag name as the user types it, e.g. "--s3-endpoint"; used in messages. */
  flag?: string;
  env?: string;
  /** The running cluster's value for this field (cluster.json), used when neither flag nor env gives one. */
  ctx?: ContextKey;
  required?: boolean;
  description?: string;
}

export type ConfigSpec = Record<string, FieldSpec>;

type ValueOf<F extends FieldSpec> = F extends { type: 'string' | 'url' | 'enum' }
  ? string
  : F extends { type: 'bool' }
    ? boolean
    : F extends { type: 'list' | 'urls' }
      ? string[]
      : number;

type HasDefault<F> = F extends { default: unknown } ? true : F extends { required: true } ? true : false;

export type ConfigOf<S extends ConfigSpec> = {
  [K in keyof S]: HasDefault<S[K]> extends true ? ValueOf<S[K]> : ValueOf<S[K]> | undefined;
};

export class ConfigError extends OcdnError {
  readonly problems: string[];
  constructor(problems: string[]) {
    super(ErrorCodes.CONFIG, problems.length === 1 ? problems[0]! : `invalid configuration:\n  - ${problems.join('\n  - ')}`);
    this.problems = problems;
  }
}

function flagOf(key: string, spec: FieldSpec): string {
  return spec.flag ?? `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
}

/** An http(s) URL without trailing slashes, or undefined when `s` is not one. */
function httpUrl(s: string): string | undefined {
  try {
    const u = new URL(s);
    return u.protocol === 'http:' || u.protocol === 'https:' ? s.replace(/\/+$/, '') : undefined;
  } catch {
    return undefined;
  }
}

function parseOne(key: string, spec: FieldSpec, raw: unknown): { value?: unknown; problem?: string } {
  const name = flagOf(key, spec);
  const str = typeof raw === 'string' ? raw.trim() : raw;
  try {
    switch (spec.type) {
      case 'string': {
        const s = String(str);
        if (spec.pattern && !spec.pattern.test(s)) return { problem: `${name}: "${s}" does not match ${spec.pattern}` };
        return { value: s };
      }
      case 'int':
      case 'number': {
        const n = typeof str === 'number' ? str : Number(str);
        if (str === '' || !Number.isFinite(n)) return { problem: `${name}: "${String(raw)}" is not a number` };
        if (spec.type === 'int' && !Number.isInteger(n)) return { problem: `${name}: "${String(raw)}" is not a whole number` };
        if (spec.min !== undefined && n < spec.min) return { problem: `${name}: ${n} is below the minimum ${spec.min}` };
        if (spec.max !== undefined && n > spec.max) return { problem: `${name}: ${n} is above the maximum ${spec.max}` };
        return { value: n };
      }
      case 'bytes': {
        const n = parseBytes(str as string | number);
        if (spec.min !== undefined && n < spec.min) return { problem: `${name}: ${n} bytes is below the minimum ${spec.min}` };
        return { value: n };
      }
      case 'duration': {
        const n = parseDuration(str as string | number);
        if (spec.min !== undefined && n < spec.min) return { problem: `${name}: ${n} ms is below the minimum ${spec.min} ms` };
        return { value: n };
      }
      case 'bitrate':
        return { value: parseBitrate(String(str)) };
      case 'bool': {
        if (typeof str === 'boolean') return { value: str };
        const s = String(str).toLowerCase();
        if (['1', 'true', 'yes', 'on'].includes(s)) return { value: true };
        if (['0', 'false', 'no', 'off'].includes(s)) return { value: false };
        return { problem: `${name}: "${String(raw)}" is not a boolean (true/false)` };
      }
      case 'url': {
        const u = httpUrl(String(str));
        return u === undefined ? { problem: `${name}: "${String(raw)}" must be an http(s) URL` } : { value: u };
      }
      case 'urls': {
        const list = (Array.isArray(str) ? str : String(str).split(',')).map((x) => String(x).trim()).filter(Boolean);
        const bad = list.filter((x) => httpUrl(x) === undefined);
        if (bad.length) return { problem: `${name}: ${bad.map((b) => `"${b}"`).join(', ')} must be http(s) URLs (several: comma-separated)` };
        return { value: list.map((x) => httpUrl(x)!) };
      }
      case 'enum': {
        const s = String(str);
        if (!spec.values.includes(s)) return { problem: `${name}: "${s}" is not one of ${spec.values.join(', ')}` };
        return { value: s };
      }
      case 'list':
        return {
          value: (Array.isArray(str) ? str : String(str).split(',')).map((s) => String(s).trim()).filter(Boolean),
        };
    }
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    return { problem: `${name}: ${msg.replace(/^E_CONFIG: /, '')}` };
  }
}

export type ConfigSource = 'flag' | 'env' | 'context' | 'default';
const sources = new WeakMap<object, Record<string, ConfigSource>>();

/** Where a loaded field's value came from, for messages that say what was tried. */
export function configSource(cfg: object, key: string): ConfigSource | undefined {
  return sources.get(cfg)?.[key];
}

/**
 * Resolves a config from parsed flags (commander's opts(): undefined when not given), the
 * environment, the running cluster's context (fields with `ctx`), and defaults, in that order.
 * Throws ConfigError listing every problem.
 */
export function loadConfig<S extends ConfigSpec>(
  spec: S,
  flags: Record<string, unknown> = {},
  env: NodeJS.ProcessEnv = process.env,
  context: Partial<Record<ContextKey, unknown>> = {},
): ConfigOf<S> {
  const out: Record<string, unknown> = {};
  const from: Record<string, ConfigSource> = {};
  const problems: string[] = [];
  for (const [key, field] of Object.entries(spec)) {
    let raw: unknown = flags[key];
    let source: ConfigSource = 'flag';
    if (raw === undefined && field.env && env[field.env] !== undefined && env[field.env] !== '') (raw = env[field.env]), (source = 'env');
    if (raw === undefined && field.ctx && context[field.ctx] !== undefined) (raw = context[field.ctx]), (source = 'context');
    if (raw === undefined) (raw = field.default), (source = 'default');
    from[key] = source;
    if (raw === undefined) {
      if (field.required) problems.push(`${flagOf(key, field)}${field.env ? ` (or ${field.env})` : ''} is required`);
      out[key] = undefined;
      continue;
    }
    const { value, problem } = parseOne(key, field, raw);
    if (problem) problems.push(problem);
    else out[key] = value;
  }
  if (problems.length > 0) throw new ConfigError(problems);
  sources.set(out, from);
  return out as ConfigOf<S>;
}

/**
 * Runs one loader of several whose problems should be reported together: returns its value, or
 * adds its problems to `problems` and returns undefined. Other errors pass through.
 */
export function collectProblems<T>(problems: string[], load: () => T): T | undefined {
  try {
    return load();
  } catch (err) {
    if (err instanceof ConfigError) {
      problems.push(...err.problems);
      return undefined;
    }
    throw err;
  }
}

import type { Command } from 'commander';
import { type ClusterContext, readContext, START_HINT, stateFile } from './cluster-context.ts';
import { type ConfigOf, type ConfigSpec, configSource, loadConfig } from './config.ts';
import { type ErrorCode, OcdnError } from './errors.ts';

/** `--dir`: the cluster whose cluster.json fills in what a command is not given. */
export function addDirOption(cmd: Command): Command {
  return cmd.option('--dir <dir>', 'cluster dir whose cluster.json fills in endpoints and secrets (env OCDN_DIR) [default ./.ocdn]');
}

/** A command's config with the running cluster's context behind flags and env. */
export function loadCommandConfig<S extends ConfigSpec>(
  spec: S,
  flags: Record<string, unknown>,
  env: NodeJS.ProcessEnv = process.env,
): { cfg: ConfigOf<S>; ctx: ClusterContext } {
  const ctx = readContext(flags.dir, env);
  return { cfg: loadConfig(spec, flags, env, ctx.values), ctx };
}

const flagName = (key: string, spec: ConfigSpec) => spec[key]?.flag ?? `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;

/** Where a field's value came from, in words: what a user needs to see when that value did not work. */
export function whereFrom<S extends ConfigSpec>(spec: S, cfg: ConfigOf<S>, key: keyof S & string, ctx: ClusterContext): string {
  const field = spec[key]!;
  const flag = flagName(key, spec);
  switch (configSource(cfg, key)) {
    case 'flag':
      return `from ${flag}`;
    case 'env':
      return `from ${field.env}`;
    case 'context':
      return `from ${stateFile(ctx.dir)}`;
    default: {
      const tried = [flag, field.env, field.ctx ? stateFile(ctx.dir) : undefined].filter(Boolean).join(', ');
      return `built-in default; nothing in ${tried}`;
    }
  }
}

/**
 * The one line a command prints when a peer does not answer: what it tried, where that value
 * came from, and how to get a cluster when the value was not the user's own.
 */
export function unreachable<S extends ConfigSpec>(
  code: ErrorCode,
  what: string,
  spec: S,
  cfg: ConfigOf<S>,
  key: keyof S & string,
  ctx: ClusterContext,
  cause: unknown,
): OcdnError {
  const why = cause instanceof Error ? ((cause as Error & { code?: string }).code ?? cause.message) : String(cause);
  return new OcdnError(code, `cannot reach ${what} at ${String(cfg[key])}: ${why}${sourceAndHint(spec, cfg, key, ctx)}`, { cause });
}

/** An error about a peer, with where its address came from and the hint appended. */
export function explain<S extends ConfigSpec>(
  err: unknown,
  codes: readonly ErrorCode[],
  spec: S,
  cfg: ConfigOf<S>,
  key: keyof S & string,
  ctx: ClusterContext,
): unknown {
  if (!(err instanceof OcdnError) || !codes.includes(err.code)) return err;
  return new OcdnError(err.code, `${err.message}${sourceAndHint(spec, cfg, key, ctx)}`, { cause: err, details: err.details });
}

function sourceAndHint<S extends ConfigSpec>(spec: S, cfg: ConfigOf<S>, key: keyof S & string, ctx: ClusterContext): string {
  const source = configSource(cfg, key);
  const hint = source === 'default' || source === 'context' ? `; ${START_HINT} or pass ${flagName(key, spec)}` : '';
  return ` (${whereFrom(spec, cfg, key, ctx)})${hint}`;
}

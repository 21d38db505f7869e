import { pino, type Logger, type LoggerOptions } from 'pino';

export type { Logger };

/**
 * Structured JSON logs on stdout (one object per line, pino's format), so a process's log file
 * can be grepped and fed to any log pipeline. OCDN_LOG_LEVEL sets the level; tests default to
 * "silent" so the runner's output stays readable.
 */
export function createLogger(component: string, opts: { level?: string; fields?: Record<string, unknown> } = {}): Logger {
  const level = opts.level ?? process.env.OCDN_LOG_LEVEL ?? (process.env.VITEST ? 'silent' : 'info');
  const options: LoggerOptions = {
    level,
    base: { component, pid: process.pid, ...opts.fields },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  return pino(options);
}

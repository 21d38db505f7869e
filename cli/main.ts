import { Command, CommanderError } from 'commander';
import { describeError, ErrorCodes, isOcdnError } from '../common/errors.ts';
import { registerOrigin } from './origin.ts';
import { registerContent } from './content.ts';
import { registerEdge } from './edge.ts';
import { registerSteering } from './steering.ts';
import { registerTelemetry } from './telemetry.ts';
import { registerPlay } from './play.ts';
import { registerCluster } from './cluster.ts';
import { registerConsole } from './console.ts';
import { registerLab } from './lab.ts';

export function buildProgram(): Command {
  const program = new Command('ocdn')
    .description('Open Connect-style video CDN and playback telemetry: run, measure and break a CDN on your machine')
    .version('0.1.0')
    .exitOverride()
    .showHelpAfterError('(run with --help for usage)')
    .showSuggestionAfterError(true);
  registerCluster(program);
  registerOrigin(program);
  registerContent(program);
  registerEdge(program);
  registerSteering(program);
  registerTelemetry(program);
  registerPlay(program);
  registerConsole(program);
  registerLab(program);
  return program;
}

/** Usage mistakes exit 2 (like most Unix tools); runtime failures exit 1, as one clear line. */
export async function main(argv: string[]): Promise<void> {
  // A reader that went away (`ocdn … | head`, or `| tee` killed by the same Ctrl-C) must not
  // crash a command halfway through its shutdown: what is left to print goes nowhere.
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE') throw err;
    });
  }
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    process.exitCode = exitCodeFor(err);
    if (err instanceof CommanderError) return; // commander already printed its message
    process.stderr.write(`ocdn: ${describeError(err)}\n`);
    if (process.env.OCDN_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
  }
}

export function exitCodeFor(err: unknown): number {
  if (err instanceof CommanderError) {
    return ['commander.helpDisplayed', 'commander.version', 'commander.help'].includes(err.code) ? 0 : 2;
  }
  if (isOcdnError(err, ErrorCodes.CONFIG) || isOcdnError(err, ErrorCodes.USAGE)) return 2;
  return 1;
}

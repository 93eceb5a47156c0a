/**
 * Implements: the `gpt-hybrid` command dispatcher: parses the command line, runs the command, and turns
 * every failure into one clear message and an exit code (2 for usage and config errors, 1 otherwise).
 */
import { readFileSync } from 'node:fs';
import { ConfigError } from '../config/errors.ts';
import { parseCommandLine } from './args.ts';
import { UsageError } from './command-spec.ts';

export async function main(argv: readonly string[]): Promise<number> {
  try {
    const command = parseCommandLine(argv);
    switch (command.command) {
      case 'help':
        process.stdout.write(command.text.endsWith('\n') ? command.text : command.text + '\n');
        return 0;
      case 'version':
        process.stdout.write(`${packageVersion()}\n`);
        return 0;
      // Loaded on demand: `ctl` must answer fast and never needs tfjs.
      case 'train':
        return await (await import('./train.ts')).runTrain(command);
      case 'ctl':
        return await (await import('./ctl.ts')).runCtl(command);
      case 'plan':
        return await (await import('./plan.ts')).runPlan(command);
      case 'schedule':
        return (await import('./schedule.ts')).runSchedule(command);
      case 'checkpoint':
        return await (await import('./checkpoint.ts')).runCheckpoint(command);
      case 'generate':
        return await (await import('./generate.ts')).runGenerate(command);
      case 'eval':
        return await (await import('./eval.ts')).runEval(command);
      case 'plot':
        return (await import('./plot.ts')).runPlot(command);
    }
  } catch (error) {
    if (error instanceof UsageError || error instanceof ConfigError) {
      process.stderr.write(`gpt-hybrid: ${error.message}\n`);
      return 2;
    }
    const message = error instanceof Error ? (process.env.GPT_HYBRID_DEBUG ? error.stack : error.message) : String(error);
    process.stderr.write(`gpt-hybrid: error: ${message}\n(set GPT_HYBRID_DEBUG=1 for the stack trace)\n`);
    return 1;
  }
}

function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

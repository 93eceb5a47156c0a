/**
 * Implements: the gpt-hybrid command line's dispatcher: parsing argv (node's util.parseArgs) into a
 * typed command, with the general and per-command help. Each command is one entry of COMMANDS, its
 * spec in its own <command>-args.ts (options, help and how its parsed values become a result), so
 * a new command is a new file and an entry here, not a branch.
 */
import { parseArgs as parseNodeArgs } from 'node:util';
import { closestMatch } from '../config/suggest.ts';
import { CHECKPOINT_SPEC, type CheckpointCommand } from './checkpoint-args.ts';
import { HELP_OPTION, PROGRAM, UsageError, type CommandSpec, type ParsedValues } from './command-spec.ts';
import { CTL_SPEC, type CtlCommand } from './ctl-args.ts';
import { EVAL_SPEC, type EvalCommand } from './eval-args.ts';
import { GENERATE_SPEC, type GenerateCommand } from './generate-args.ts';
import { formatCommandHelp, formatGeneralHelp } from './help.ts';
import { PLAN_SPEC, type PlanCommand } from './plan-args.ts';
import { PLOT_SPEC, type PlotCommand } from './plot-args.ts';
import { SCHEDULE_SPEC, type ScheduleCommand } from './schedule-args.ts';
import { TRAIN_SPEC, type TrainCommand } from './train-args.ts';

export type CliCommand =
  | TrainCommand
  | CtlCommand
  | PlanCommand
  | ScheduleCommand
  | CheckpointCommand
  | GenerateCommand
  | EvalCommand
  | PlotCommand
  | { command: 'help'; text: string }
  | { command: 'version' };

// The order here is the order of the general help.
const COMMANDS: Record<string, CommandSpec<CliCommand>> = {
  train: TRAIN_SPEC,
  ctl: CTL_SPEC,
  plan: PLAN_SPEC,
  schedule: SCHEDULE_SPEC,
  checkpoint: CHECKPOINT_SPEC,
  generate: GENERATE_SPEC,
  eval: EVAL_SPEC,
  plot: PLOT_SPEC,
};

function usageLine(name: string): string {
  return `usage: ${PROGRAM} ${name} ${COMMANDS[name]!.usage}\nRun '${PROGRAM} ${name} --help' for details.`;
}

const GENERAL_USAGE = `usage: ${PROGRAM} <command> [options]   (commands: ${Object.keys(COMMANDS).join(', ')})\nRun '${PROGRAM} --help' for details.`;

export function generalHelp(): string {
  return formatGeneralHelp(COMMANDS);
}

export function commandHelp(name: string): string {
  const spec = COMMANDS[name];
  if (spec === undefined) throw new Error(`no command "${name}"`);
  return formatCommandHelp(name, spec);
}

/** Parses `argv` without the node and script entries (process.argv.slice(2)). Throws UsageError. */
export function parseCommandLine(argv: readonly string[]): CliCommand {
  const [first, ...rest] = argv;
  if (first === undefined) throw new UsageError('no command given', GENERAL_USAGE);
  if (first === '--help' || first === '-h' || first === 'help') {
    const topic = rest[0];
    if (topic === undefined || topic.startsWith('-')) return { command: 'help', text: generalHelp() };
    if (COMMANDS[topic] === undefined) throw unknownCommand(topic);
    return { command: 'help', text: commandHelp(topic) };
  }
  if (first === '--version' || first === '-V' || first === '-v') return { command: 'version' };
  if (first.startsWith('-')) {
    throw new UsageError(`unknown option ${first}; options go after the command (e.g. ${PROGRAM} train config.json ${first})`, GENERAL_USAGE);
  }
  const spec = COMMANDS[first];
  if (spec === undefined) throw unknownCommand(first);
  return parseCommand(first, spec, rest);
}

function unknownCommand(name: string): UsageError {
  const guess = closestMatch(name, Object.keys(COMMANDS));
  const hint = guess === undefined ? `commands: ${Object.keys(COMMANDS).join(', ')}` : `did you mean "${guess}"?`;
  return new UsageError(`unknown command "${name}"; ${hint}`, GENERAL_USAGE);
}

function parseCommand(name: string, spec: CommandSpec<CliCommand>, args: string[]): CliCommand {
  const usage = usageLine(name);
  const optionSpecs = { ...spec.options, help: HELP_OPTION };
  const nodeOptions = Object.fromEntries(
    Object.entries(optionSpecs).map(([long, option]) => [
      long,
      { type: option.type, ...(option.short === undefined ? {} : { short: option.short }), ...(option.multiple ? { multiple: true } : {}) },
    ]),
  );
  let parsed: { values: ParsedValues; positionals: string[] };
  try {
    parsed = parseNodeArgs({ args: withKebabOptions(args, Object.keys(optionSpecs)), options: nodeOptions, allowPositionals: true, strict: true }) as typeof parsed;
  } catch (error) {
    throw new UsageError(explainParseError(error, name, Object.keys(optionSpecs)), usage);
  }
  if (parsed.values.help === true) return { command: 'help', text: commandHelp(name) };
  return spec.build(parsed.values, parsed.positionals, usage);
}

/**
 * torchrun spells its options with underscores (--nproc_per_node, --node_rank, --max_restarts): every
 * option of a command is taken in that spelling too, rewritten to the kebab-case name before parsing.
 * Only up to a `--` that ends the options, and only names the command has.
 */
function withKebabOptions(args: readonly string[], optionNames: readonly string[]): string[] {
  const known = new Set(optionNames);
  const end = args.indexOf('--');
  return args.map((arg, index) => {
    if ((end >= 0 && index >= end) || !arg.startsWith('--') || !arg.includes('_')) return arg;
    const equals = arg.indexOf('=');
    const name = arg.slice(2, equals < 0 ? undefined : equals);
    const kebab = name.replaceAll('_', '-');
    return known.has(name) || !known.has(kebab) ? arg : `--${kebab}${equals < 0 ? '' : arg.slice(equals)}`;
  });
}

/** Options users may expect from other tools that would put a secret on the command line, and what to use. */
const SECRET_OPTIONS: Record<string, string> = {
  '--nats-token': '--nats-token-file FILE or $NATS_TOKEN',
  '--nats-password': '--nats-password-file FILE or $NATS_PASSWORD',
};

/** Rewords node's parseArgs errors (long, and written for programmers) for users. */
function explainParseError(error: unknown, command: string, optionNames: string[]): string {
  const code = (error as { code?: string }).code;
  const message = (error as Error).message ?? String(error);
  // node names an option with a short form as '-o, --out <value>': prefer the long name.
  const long = /--([A-Za-z0-9_-]+)/.exec(message)?.[1];
  const option = long === undefined ? (/'(-[^' ,]+)/.exec(message)?.[1] ?? '') : `--${long}`;
  if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
    const fromFile = SECRET_OPTIONS[option];
    if (fromFile !== undefined) return `unknown option ${option} for ${command}: a secret is not given as an option's value (ps shows it to every user); use ${fromFile}`;
    const guess = closestMatch(option.replace(/^-+/, ''), optionNames);
    const hint = guess === undefined ? '' : `; did you mean --${guess}?`;
    return `unknown option ${option} for ${command}${hint}`;
  }
  if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
    if (message.includes('does not take an argument')) return `option ${option} takes no value`;
    // parseArgs takes a value that starts with '-' (`--steps -1`) for the next option.
    return `option ${option} needs a value (write ${option} VALUE or ${option}=VALUE; a value that starts with '-' only as ${option}=VALUE)`;
  }
  throw error;
}

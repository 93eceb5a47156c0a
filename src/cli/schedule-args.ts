/**
 * Implements: the `schedule` command line: its options and help, and `ScheduleCommand`. schedule.ts runs it.
 * Apart from schedule.ts so that parsing and help load none of the command's dependencies (train's
 * include tfjs): args.ts imports every command's spec, main.ts loads schedule.ts only to run it.
 */
import { closestMatch } from '../config/suggest.ts';
import { buildSchedule, ScheduleError, SCHEDULE_KINDS, type ScheduleKind } from '../scheduler/schedules.ts';
import { positiveInteger, PROGRAM, UsageError, type CommandSpec, type ParsedValues } from './command-spec.ts';

export interface ScheduleCommand {
  command: 'schedule';
  kind: ScheduleKind;
  stages: number;
  microBatches: number;
  chunks: number;
  json: boolean;
  /** Where to write the SVG timeline. */
  svg?: string;
}

export const SCHEDULE_SPEC: CommandSpec<ScheduleCommand> = {
  summary: 'print a pipeline schedule (gpipe, 1f1b, interleaved, zb-h1, zbv, auto-zb) as a chart, JSON or SVG timeline',
  usage: `--kind ${SCHEDULE_KINDS.join('|')} --stages P --microbatches M [--chunks V] [--json] [--svg FILE]`,
  description:
    'Prints the order in which each pipeline stage runs the forward (F) and backward (B) passes of\n' +
    'the micro-batches in one step: a chart with stages as rows and time slots as columns (every op\n' +
    'one slot, . = idle), then each stage\'s bubble next to the theoretical (p - 1) / (m + p - 1)\n' +
    '(divided by the chunks for interleaved). Ops read F3 (forward of micro-batch 3) or B0.1\n' +
    '(backward of micro-batch 0 through model chunk 1). The interleaved schedule needs the\n' +
    'micro-batches to be a multiple of the stages. The zero-bubble schedules zb-h1 and zbv split\n' +
    'each backward into B (the input gradient, which the stage before waits for) and W (the weight\n' +
    'gradient, W0.1), run where 1F1B would idle; zbv runs two chunks per stage in a V (chunk 0 down\n' +
    'the stages, chunk 1 back up). auto-zb places its W\'s by simulation from measured op times in a\n' +
    'run; here it is placed for F, B and W of equal length.',
  options: {
    kind: { type: 'string', placeholder: 'KIND', doc: `${SCHEDULE_KINDS.join(' | ')}` },
    stages: { type: 'string', placeholder: 'P', doc: 'pipeline stages' },
    microbatches: { type: 'string', placeholder: 'M', doc: 'micro-batches per step' },
    chunks: { type: 'string', placeholder: 'V', doc: 'model chunks per stage (interleaved; zbv needs 2) [1, zbv 2]' },
    json: { type: 'boolean', doc: 'print {"kind","stages","microbatches","chunks","ops"}; ops[s] lists\nstage s\'s ops as ["F"|"B"|"W", microbatch, chunk]' },
    svg: { type: 'string', placeholder: 'FILE', doc: 'also write the timeline as SVG (backward twice as long as forward;\nB and W half of it each, W in its own colour)' },
  },
  examples: [
    `${PROGRAM} schedule --kind 1f1b --stages 4 --microbatches 8`,
    `${PROGRAM} schedule --kind interleaved --stages 4 --microbatches 8 --chunks 2 --svg interleaved.svg`,
    `${PROGRAM} schedule --kind gpipe --stages 2 --microbatches 4 --json`,
    `${PROGRAM} schedule --kind zbv --stages 4 --microbatches 8 --svg zbv.svg`,
  ],
  build: buildScheduleCommand,
};

function buildScheduleCommand(values: ParsedValues, positionals: string[], usage: string): ScheduleCommand {
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}; schedule takes only options`, usage);
  const kind = values.kind as string | undefined;
  if (kind === undefined) throw new UsageError(`schedule needs --kind ${SCHEDULE_KINDS.join('|')}`, usage);
  if (!(SCHEDULE_KINDS as readonly string[]).includes(kind)) {
    const guess = closestMatch(kind, SCHEDULE_KINDS);
    throw new UsageError(`unknown schedule kind "${kind}"; ${guess === undefined ? `use one of ${SCHEDULE_KINDS.join(', ')}` : `did you mean "${guess}"?`}`, usage);
  }
  const stages = positiveInteger(values.stages as string | undefined, '--stages', usage);
  const microBatches = positiveInteger(values.microbatches as string | undefined, '--microbatches', usage);
  if (stages === undefined || microBatches === undefined) throw new UsageError(`schedule needs ${stages === undefined ? '--stages P' : '--microbatches M'}`, usage);
  const command: ScheduleCommand = {
    command: 'schedule',
    kind: kind as ScheduleKind,
    stages,
    microBatches,
    chunks: positiveInteger(values.chunks as string | undefined, '--chunks', usage) ?? (kind === 'zbv' ? 2 : 1),
    json: values.json === true,
  };
  const svg = values.svg as string | undefined;
  if (svg !== undefined) {
    if (svg === '') throw new UsageError('--svg needs a file name, got an empty string', usage);
    command.svg = svg;
  }
  try {
    buildSchedule(command.kind, stages, microBatches, command.chunks);
  } catch (error) {
    if (!(error instanceof ScheduleError)) throw error;
    throw new UsageError(error.message, usage);
  }
  return command;
}

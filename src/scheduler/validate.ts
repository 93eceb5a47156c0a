/**
 * Implements: the schedule validator (pytorch's `_validate_schedule` idea). A schedule is accepted when
 * - it has one op list per stage, and every op names F, B or W, a micro-batch in [0, M) and a chunk in [0, V);
 * - every stage runs the forward and the backward of every (micro-batch, chunk) exactly once (every
 *   stage holds every chunk of its own; placement.ts says which virtual stage), and where any stage
 *   splits its backwards ([Note: split backward] in ops.ts), every stage runs every W exactly once too;
 * - on each stage a backward comes after that stage's forward of the same micro-batch and chunk, and
 *   a W after that B;
 * - no stage holds more activations than its kind promises (memory-bound.ts);
 * - it can run to the end: simulated with unit op times (timeline.ts), no stage waits forever; this is
 *   where a forward before the previous stage's forward, or a B before the next stage's B of that
 *   micro-batch, shows (as the deadlock it is, naming the op waited for).
 * The error lists every problem and draws the step x stage table with the offending ops marked
 * `>F3<` (pytorch's `_format_pipeline_order`), so the bad spot is visible at a glance.
 */
import { inFlightByOrder } from './measure.ts';
import { activationLimit } from './memory-bound.ts';
import { formatOp, OP_KINDS, ScheduleError, splitsBackward, type OpKind, type PipelineOp, type Schedule } from './ops.ts';
import { simulateTimeline } from './timeline.ts';

export class ScheduleValidationError extends ScheduleError {
  override name = 'ScheduleValidationError';
  constructor(
    readonly problems: string[],
    readonly grid: string,
  ) {
    super(`invalid pipeline schedule:\n${problems.map((p) => `  - ${p}`).join('\n')}\n\n${grid}`);
  }
}

/** At most this many problems are listed; the rest are counted. */
const MAX_PROBLEMS = 12;

/** Throws ScheduleValidationError naming every problem; returns the schedule when valid. */
export function validateSchedule(schedule: Schedule): Schedule {
  const problems: string[] = [];
  const marks = new Set<string>();
  const mark = (stage: number, step: number) => marks.add(`${stage}:${step}`);
  const { stages, microBatches, chunks, ops } = schedule;

  if (ops.length !== stages) {
    problems.push(`the schedule has op lists for ${ops.length} stages, but says stages = ${stages}`);
    throw new ScheduleValidationError(problems, formatOrderGrid(ops));
  }
  const kinds: readonly OpKind[] = ops.some((stageOps) => splitsBackward(stageOps)) ? OP_KINDS : ['F', 'B'];
  ops.forEach((stageOps, stage) => {
    const seen = new Map<string, number>();
    stageOps.forEach((operation, step) => {
      const label = `stage ${stage} step ${step}: ${describe(operation)}`;
      if (!(OP_KINDS as readonly string[]).includes(operation.kind)) {
        problems.push(`${label} has kind ${JSON.stringify(operation.kind)}; use F, B or W`);
        mark(stage, step);
        return;
      }
      if (!Number.isSafeInteger(operation.microBatch) || operation.microBatch < 0 || operation.microBatch >= microBatches) {
        problems.push(`${label} names micro-batch ${operation.microBatch}, outside 0..${microBatches - 1}`);
        mark(stage, step);
        return;
      }
      if (!Number.isSafeInteger(operation.chunk) || operation.chunk < 0 || operation.chunk >= chunks) {
        problems.push(`${label} names chunk ${operation.chunk}, outside 0..${chunks - 1}`);
        mark(stage, step);
        return;
      }
      const id = formatOp(operation);
      const first = seen.get(id);
      if (first !== undefined) {
        problems.push(`${label} repeats the op of step ${first}`);
        mark(stage, step);
        return;
      }
      seen.set(id, step);
      if (operation.kind !== 'F') {
        const before = operation.kind === 'B' ? 'F' : 'B';
        if (!seen.has(formatOp({ ...operation, kind: before }))) {
          const later = stageOps.findIndex((o, i) => i > step && o.kind === before && o.microBatch === operation.microBatch && o.chunk === operation.chunk);
          const why = operation.kind === 'B' ? 'a backward needs the activations its forward saved' : 'a W needs what its B left (the gradients of every layer output)';
          problems.push(`${label} comes before its ${before === 'F' ? 'forward' : 'B'}${later < 0 ? '' : ` (step ${later})`}: ${why}`);
          mark(stage, step);
        }
      }
    });
    const missing: string[] = [];
    for (const kind of kinds) {
      for (let chunk = 0; chunk < chunks; chunk++) {
        for (let microBatch = 0; microBatch < microBatches; microBatch++) {
          if (!seen.has(formatOp({ kind, microBatch, chunk }))) missing.push(formatOp({ kind, microBatch, chunk }));
        }
      }
    }
    if (missing.length > 0) {
      problems.push(`stage ${stage} never runs ${missing.slice(0, 8).join(', ')}${missing.length > 8 ? ` and ${missing.length - 8} more` : ''}`);
    }
  });

  if (problems.length === 0) {
    const timeline = simulateTimeline(schedule, { forward: 1, backward: 1 });
    if (!timeline.ok) {
      const { completed, waiting } = timeline.stall;
      waiting.forEach((wait, stage) => {
        if (wait === null) return;
        problems.push(`deadlock: stage ${stage} step ${completed[stage]} ${formatOp(wait.op)} waits for ${wait.needs}, which never runs before it`);
        mark(stage, completed[stage]!);
      });
    }
  }

  if (problems.length === 0) {
    ops.forEach((stageOps, stage) => {
      const limit = activationLimit(schedule.kind, stages, stage, microBatches, chunks);
      const held = inFlightByOrder(stageOps);
      if (held > limit) {
        problems.push(`stage ${stage} holds the activations of ${held} (micro-batch, chunk) pairs at once, more than the ${limit} the ${schedule.kind} schedule allows`);
      }
    });
  }

  if (problems.length > 0) {
    const listed = problems.length > MAX_PROBLEMS ? [...problems.slice(0, MAX_PROBLEMS), `... and ${problems.length - MAX_PROBLEMS} more problems`] : problems;
    throw new ScheduleValidationError(listed, formatOrderGrid(ops, marks));
  }
  return schedule;
}

function describe(operation: PipelineOp): string {
  try {
    return formatOp(operation);
  } catch {
    return JSON.stringify(operation);
  }
}

/**
 * The step x stage table: one row per step (position in the stage's list), one column per stage.
 * `marks` holds "stage:step" cells to draw as `>F3<`.
 */
export function formatOrderGrid(ops: readonly (readonly PipelineOp[])[], marks: ReadonlySet<string> = new Set()): string {
  const steps = Math.max(0, ...ops.map((stageOps) => stageOps.length));
  const cell = (stage: number, step: number): string => {
    const operation = ops[stage]?.[step];
    if (operation === undefined) return '';
    const text = describe(operation);
    return marks.has(`${stage}:${step}`) ? `>${text}<` : text;
  };
  const headers = ops.map((_, stage) => `Stage ${stage}`);
  const widths = headers.map((header, stage) => Math.max(header.length, ...Array.from({ length: steps }, (_, step) => cell(stage, step).length)));
  const stepWidth = `Step ${String(Math.max(0, steps - 1)).padStart(2, '0')}:`.length;
  const lines = [[''.padEnd(stepWidth), ...headers.map((header, stage) => header.padEnd(widths[stage]!))].join(' ').trimEnd()];
  for (let step = 0; step < steps; step++) {
    const label = `Step ${String(step).padStart(2, '0')}:`.padEnd(stepWidth);
    lines.push([label, ...ops.map((_, stage) => cell(stage, step).padEnd(widths[stage]!))].join(' ').trimEnd());
  }
  return lines.join('\n');
}

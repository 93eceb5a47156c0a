/**
 * Implements: the values a pipeline schedule is made of. A schedule is, for every pipeline stage, the
 * ordered list of compute operations it runs in one optimizer step (pytorch's `_Action` tables,
 * DeepSpeed's instruction lists): forward or backward of one micro-batch through one model chunk.
 * Operations print as `F3` (forward, micro-batch 3, chunk 0) or `B0.1` (backward, micro-batch 0,
 * chunk 1) and parse back.
 *
 * [Note: split backward] The zero-bubble schedules (Qi et al., ICLR 2024) split a backward in two: B,
 * the input gradient, which the previous stage waits for, and W (`W0.1`), the parameters' gradients,
 * which nothing waits for and which fills what would be idle time. In a schedule with W ops, B means
 * the input gradient only; in the others B is the whole backward. A stage's list either has a W for
 * every B or none.
 *
 * [Note: virtual stages] With V chunks per stage, chunk c of stage s holds one of the model's P V
 * virtual stages; which one the schedule kind's placement says (placement.ts): c * P + s for the
 * looped ones (Megatron's interleaving), a V shape for zbv. With one chunk, virtual stage == stage.
 */

import { placeOfVirtualStage, virtualStageOf, type ChunkPlacement } from './placement.ts';

export { placeOfVirtualStage, virtualStageOf } from './placement.ts';

// Each list below is the one source of its names, and its type derives from it: the config schema
// and types, the planner and the CLI read SCHEDULE_KINDS, the schedule validator OP_KINDS.

/** Forward, backward (the input gradient only where the schedule has W ops), weight gradient. */
export const OP_KINDS = ['F', 'B', 'W'] as const;
export type OpKind = (typeof OP_KINDS)[number];

export const SCHEDULE_KINDS = ['gpipe', '1f1b', 'interleaved', 'zb-h1', 'zbv', 'auto-zb'] as const;
export type ScheduleKind = (typeof SCHEDULE_KINDS)[number];

export interface PipelineOp {
  readonly kind: OpKind;
  readonly microBatch: number;
  readonly chunk: number;
}

export interface Schedule {
  readonly kind: ScheduleKind;
  readonly stages: number;
  readonly microBatches: number;
  /** Model chunks per stage (1 except for interleaved and zbv). */
  readonly chunks: number;
  /** `ops[stage]`: that stage's operations in execution order. */
  readonly ops: readonly (readonly PipelineOp[])[];
}

/** A schedule that cannot be built from the numbers given (the message names them and the fix). */
export class ScheduleError extends Error {
  override name = 'ScheduleError';
}

export function op(kind: OpKind, microBatch: number, chunk = 0): PipelineOp {
  return { kind, microBatch, chunk };
}

/** `F3`, `B0.1`: the chunk is written only when it is not 0. */
export function formatOp(operation: PipelineOp): string {
  return `${operation.kind}${operation.microBatch}${operation.chunk === 0 ? '' : `.${operation.chunk}`}`;
}

const OP_PATTERN = /^([FBW])(\d+)(?:\.(\d+))?$/;

export function parseOp(text: string): PipelineOp {
  const match = OP_PATTERN.exec(text.trim());
  if (match === null) {
    throw new ScheduleError(`cannot read the pipeline op ${JSON.stringify(text)}: write F, B or W, the micro-batch, and optionally .chunk (F3, B0.1)`);
  }
  return op(match[1] as OpKind, Number(match[2]), match[3] === undefined ? 0 : Number(match[3]));
}

export function sameOp(a: PipelineOp, b: PipelineOp): boolean {
  return a.kind === b.kind && a.microBatch === b.microBatch && a.chunk === b.chunk;
}

/**
 * The operation that must finish before `operation` (run on `stage`) can start, or null when it needs
 * only the batch or the loss: F of virtual stage v needs F of v - 1; B of v needs B of v + 1; the last
 * virtual stage's B needs its own F (the loss), which the stage ran itself; W needs its own B.
 */
export function dependencyOf(
  operation: PipelineOp, stage: number, stages: number, chunks: number, placement: ChunkPlacement = 'looped',
): { stage: number; op: PipelineOp } | null {
  if (operation.kind === 'W') return { stage, op: op('B', operation.microBatch, operation.chunk) };
  const virtualStage = virtualStageOf(stage, operation.chunk, stages, placement);
  const lastVirtualStage = stages * chunks - 1;
  if (operation.kind === 'F') {
    if (virtualStage === 0) return null;
    const from = placeOfVirtualStage(virtualStage - 1, stages, placement);
    return { stage: from.stage, op: op('F', operation.microBatch, from.chunk) };
  }
  if (virtualStage === lastVirtualStage) return { stage, op: op('F', operation.microBatch, operation.chunk) };
  const from = placeOfVirtualStage(virtualStage + 1, stages, placement);
  return { stage: from.stage, op: op('B', operation.microBatch, from.chunk) };
}

/** Whether a stage's ops split the backward into B and W (see [Note: split backward]). */
export function splitsBackward(ops: readonly { kind: OpKind }[]): boolean {
  return ops.some((operation) => operation.kind === 'W');
}

/** The JSON form the CLI prints: `ops[s]` is stage s's list of `["F"|"B"|"W", microBatch, chunk]`. */
export interface ScheduleJson {
  kind: ScheduleKind;
  stages: number;
  microbatches: number;
  chunks: number;
  ops: [OpKind, number, number][][];
}

export function scheduleToJson(schedule: Schedule): ScheduleJson {
  return {
    kind: schedule.kind,
    stages: schedule.stages,
    microbatches: schedule.microBatches,
    chunks: schedule.chunks,
    ops: schedule.ops.map((stageOps) => stageOps.map((o): [OpKind, number, number] => [o.kind, o.microBatch, o.chunk])),
  };
}

export function scheduleFromJson(json: ScheduleJson): Schedule {
  return {
    kind: json.kind,
    stages: json.stages,
    microBatches: json.microbatches,
    chunks: json.chunks,
    ops: json.ops.map((stageOps) => stageOps.map(([kind, microBatch, chunk]) => op(kind, microBatch, chunk))),
  };
}

/** Checks that a count is a whole number of at least `minimum`, naming it in the error. */
export function checkCount(value: number, name: string, minimum = 1): void {
  if (!Number.isSafeInteger(value) || value < minimum) {
    throw new ScheduleError(`${name} must be an integer >= ${minimum}, got ${value}`);
  }
}

/**
 * Implements: the actions a stage actor executes, defined once. A schedule (ops.ts) says which
 * forwards and backwards each stage runs in which order; lowering turns a stage's list into the
 * actions of one optimizer step (PyTorch pipelining's `_Action` table after its lowering passes,
 * DeepSpeed's instruction lists): the compute ops of every gradient-accumulation round, the
 * SharedWeight reduction of the tied embedding right after the last backward of the chunk that holds
 * it, and the optimizer step that ends the step.
 *
 * A schedule that splits its backwards ([Note: split backward] in ops.ts) lowers its B ops to I
 * (backward-input: the input gradient, sent upstream at once) and its W ops to W (backward-weight: the
 * parameters' gradients, accumulated); the tied gradient is final only after the chunk's last W, so
 * REDUCE_TIED follows that. A whole backward stays B. The scheduler actor sends them one message each; the
 * stage actor dispatches on `kind` with an exhaustive switch, so a kind added here is a compile error
 * in every executor until it is handled.
 *
 * Actions print as `F3`, `B0.1`, `I2`, `W2` (compute, as ops do), `REDUCE_TIED` and `OPTIMIZER_STEP`.
 */
import { splitsBackward, type PipelineOp, type Schedule } from './ops.ts';
import { lossStageOf, tiedWeightCrossesStages, type ChunkPlacement } from './placement.ts';

export const ACTION_KINDS = ['F', 'B', 'I', 'W', 'REDUCE_TIED', 'OPTIMIZER_STEP'] as const;
export type ActionKind = (typeof ACTION_KINDS)[number];

/** The actions that compute one micro-batch through one chunk: forward, whole backward, backward-input, backward-weight. */
export const COMPUTE_ACTION_KINDS = ['F', 'B', 'I', 'W'] as const;
export type ComputeActionKind = (typeof COMPUTE_ACTION_KINDS)[number];

/** Forward, backward or one of its halves, of one micro-batch through one chunk. */
export interface ComputeAction {
  readonly kind: ComputeActionKind;
  readonly microBatch: number;
  readonly chunk: number;
}

export function isComputeAction(action: StageAction): action is ComputeAction {
  return (COMPUTE_ACTION_KINDS as readonly string[]).includes(action.kind);
}

/** Start the tied embedding / LM-head gradient reduction (the stage's SharedWeight actor does it). */
export interface ReduceTiedAction {
  readonly kind: 'REDUCE_TIED';
}

/** Finish every reduction (tied, data parallel, gradient norm) and update the weights: the step's end. */
export interface OptimizerStepAction {
  readonly kind: 'OPTIMIZER_STEP';
}

export type StageAction = ComputeAction | ReduceTiedAction | OptimizerStepAction;

export function formatAction(action: StageAction): string {
  switch (action.kind) {
    case 'F':
    case 'B':
    case 'I':
    case 'W':
      return `${action.kind}${action.microBatch}${action.chunk === 0 ? '' : `.${action.chunk}`}`;
    case 'REDUCE_TIED':
    case 'OPTIMIZER_STEP':
      return action.kind;
  }
}

export interface LoweringOptions {
  /** Gradient-accumulation rounds per step: the schedule runs once per round, micro-batches renumbered. */
  accumulation: number;
  /**
   * The chunks of this stage holding a tied parameter whose gradient is reduced with another stage
   * (the word embedding on the first and last stage when the pipeline has more than one); empty: none.
   */
  tiedChunks: readonly number[];
}

/**
 * One optimizer step of pipeline stage `stage`: round r runs the schedule's ops with micro-batch
 * numbers shifted by r x M (so tags stay unique), REDUCE_TIED follows the last op of a tied chunk that
 * adds to its gradient (its last W where the backward is split, else its last B) in the last round (the
 * transfer then overlaps whatever compute remains), OPTIMIZER_STEP ends it.
 */
export function lowerStageActions(schedule: Schedule, stage: number, options: LoweringOptions): StageAction[] {
  const ops: readonly PipelineOp[] = schedule.ops[stage];
  if (ops === undefined) throw new Error(`the schedule has no stage ${stage} (it has ${schedule.stages})`);
  return lowerStageOps(ops, schedule.microBatches, options, `stage ${stage}`);
}

/** lowerStageActions over one stage's list of ops, of a schedule with `microBatches` micro-batches. */
export function lowerStageOps(ops: readonly PipelineOp[], microBatches: number, options: LoweringOptions, stageName = 'the stage'): StageAction[] {
  const split = splitsBackward(ops);
  const gradientKind = split ? 'W' : 'B';
  const lastTied = ops.findLastIndex((op) => op.kind === gradientKind && options.tiedChunks.includes(op.chunk));
  if (options.tiedChunks.length > 0 && lastTied < 0) throw new Error(`${stageName} holds tied chunks ${options.tiedChunks.join(', ')} but its schedule runs no backward of them`);
  const kindOf = (op: PipelineOp): ComputeActionKind => (split && op.kind === 'B' ? 'I' : op.kind);
  const actions: StageAction[] = [];
  for (let round = 0; round < options.accumulation; round++) {
    ops.forEach((op, index) => {
      actions.push({ kind: kindOf(op), microBatch: op.microBatch + round * microBatches, chunk: op.chunk });
      if (index === lastTied && round === options.accumulation - 1) actions.push({ kind: 'REDUCE_TIED' });
    });
  }
  actions.push({ kind: 'OPTIMIZER_STEP' });
  return actions;
}

/**
 * An evaluation's actions on any stage: forwards only (no backward, no update), of `microBatches`
 * micro-batches taken `roundSize` at a time, each round through the stage's `chunks` in order. Every
 * forward depends only on forwards of the same round, micro-batch and an earlier chunk or stage, all
 * earlier in every stage's list, so the stages never wait on each other in a cycle; a round at a time
 * bounds the activations held between stages to one round's.
 */
export function lowerEvaluationActions(chunks: number, microBatches: number, roundSize: number): ComputeAction[] {
  if (!(Number.isInteger(roundSize) && roundSize >= 1 && microBatches % roundSize === 0)) {
    throw new Error(`an evaluation of ${microBatches} micro-batches does not split into rounds of ${roundSize}`);
  }
  const actions: ComputeAction[] = [];
  for (let first = 0; first < microBatches; first += roundSize) {
    for (let chunk = 0; chunk < chunks; chunk++) {
      for (let microBatch = first; microBatch < first + roundSize; microBatch++) actions.push({ kind: 'F', microBatch, chunk });
    }
  }
  return actions;
}

/** On the wire an action is a small map: `{kind}`, plus micro-batch and chunk for compute actions. */
export type WireAction = { kind: ActionKind; microBatch?: number; chunk?: number };

export function actionToWire(action: StageAction): WireAction {
  return isComputeAction(action) ? { kind: action.kind, microBatch: action.microBatch, chunk: action.chunk } : { kind: action.kind };
}

/**
 * Reads an action received from another process; throws naming the first bad field. `limits` bound the
 * micro-batch (M x accumulation rounds) and chunk numbers a stage can run.
 */
export function actionFromWire(value: unknown, limits: { microBatches: number; chunks: number }): StageAction {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error(`an action must be a map, got ${JSON.stringify(value)}`);
  const fields = value as Record<string, unknown>;
  const kind = fields.kind;
  if (typeof kind !== 'string' || !(ACTION_KINDS as readonly string[]).includes(kind)) {
    throw new Error(`action kind ${JSON.stringify(kind)} is not one of ${ACTION_KINDS.join(', ')}`);
  }
  const checked = kind as ActionKind;
  switch (checked) {
    case 'F':
    case 'B':
    case 'I':
    case 'W': {
      const { microBatch, chunk } = fields;
      if (!Number.isSafeInteger(microBatch) || (microBatch as number) < 0 || (microBatch as number) >= limits.microBatches) {
        throw new Error(`action ${checked}: micro-batch ${JSON.stringify(microBatch)} is not in [0, ${limits.microBatches})`);
      }
      if (!Number.isSafeInteger(chunk) || (chunk as number) < 0 || (chunk as number) >= limits.chunks) {
        throw new Error(`action ${checked}: chunk ${JSON.stringify(chunk)} is not in [0, ${limits.chunks})`);
      }
      return { kind: checked, microBatch: microBatch as number, chunk: chunk as number };
    }
    case 'REDUCE_TIED':
    case 'OPTIMIZER_STEP':
      return { kind: checked };
  }
}

export function sameAction(a: StageAction, b: StageAction): boolean {
  if (a.kind !== b.kind) return false;
  return isComputeAction(a) ? a.microBatch === (b as ComputeAction).microBatch && a.chunk === (b as ComputeAction).chunk : true;
}

/**
 * The chunks of pipeline stage `stage` holding the tied word embedding when it is reduced between
 * stages: virtual stage 0 (chunk 0 of the first stage) and the last virtual stage (the last chunk of
 * the stage that computes the loss); none when both sit on one stage (no pipeline parallelism, or the
 * V placement, where stage 0 holds both and its chunks share one variable).
 */
export function tiedChunksOf(stage: number, pipeline: number, chunks: number, placement: ChunkPlacement = 'looped'): number[] {
  if (!tiedWeightCrossesStages(pipeline, chunks, placement)) return [];
  return stage === 0 ? [0] : stage === lossStageOf(pipeline, chunks, placement) ? [chunks - 1] : [];
}

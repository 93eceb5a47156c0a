/**
 * Implements: one optimizer step of a pipeline stage as the executor of its actions (actions.ts): the
 * forwards and backwards of every accumulation round (whole, or split into I and W by a zero-bubble
 * schedule), REDUCE_TIED (the SharedWeight reduction of the
 * tied embedding, placed by lowering right after the last backward of the chunk holding it, so the last
 * stage's transfer overlaps the first stage's remaining backward), and OPTIMIZER_STEP (the tied and
 * data-parallel reductions, the gradient norm and the update). Each action kind has its branch in one
 * exhaustive switch.
 * The arithmetic mirrors the single-process Trainer: gradients and losses are sums over micro-batches,
 * scaled once by 1 / (micro-batches x accumulation rounds x dp). A loss or gradient norm that is not
 * finite is caught before the update (config nonFinite): every rank sees the same reduced values, so the
 * whole job stops or skips the step together.
 *
 * Between steps the executor also runs an evaluation: forwards of the validation data only
 * (train/evaluation-plan.ts), whose loss the stage holding the head sums and reduces over the replicas.
 */
import { learningRateAt } from '../train/lr-schedule.ts';
import { evaluationMicroBatches } from '../train/evaluation-plan.ts';
import type { ProcessGroup } from '../comm/collectives.ts';
import type { TrainConfig } from '../config/types.ts';
import * as tf from '../tf.ts';
import { gatherBatch, microBatches, rankSlice, type BatchSampler } from '../dataset/sampler.ts';
import type { TokenizedDataset } from '../dataset/webtext.ts';
import type { TokenBatch } from '../model/gpt.ts';
import { WORD_EMBEDDING } from '../model/params.ts';
import type { ReductionOptions } from '../shared-weights/shared-weights.ts';
import { averageOverGlobalBatch, meansOfReduced, type StepMeans } from '../train/gradient-reduction.ts';
import { BucketedGradientReduction } from '../train/bucketed-reduction.ts';
import type { DynamicLossScaler } from '../train/loss-scaler.ts';
import { NonFiniteGuard } from '../train/non-finite.ts';
import { sumOfSquares, type AdamOptimizer } from '../train/optimizer.ts';
import type { DataParallelRole } from '../train/trainer.ts';
import { formatAction, type StageAction } from '../scheduler/actions.ts';
import type { StageCosts } from '../scheduler/auto-zero-bubble.ts';
import { costsOfStep } from '../scheduler/measured-costs.ts';
import type { FinalGradients, PipelineStage } from './stage.ts';
import { wallClockMs, type TraceRecorder } from '../trace/trace.ts';

export interface PipelineStepContext {
  config: TrainConfig;
  /** The run's length: the learning rate schedule's default decaySteps. */
  totalSteps: number;
  dataset: TokenizedDataset;
  /** The held-out samples evaluations read; omitted: the job evaluates nothing. */
  validation?: TokenizedDataset;
  sampler: BatchSampler;
  stage: PipelineStage;
  /** All parameters of the stage by name (its chunks merged). */
  params: Map<string, tf.Variable>;
  optimizer: AdamOptimizer;
  /** The tied-gradient reduction: the SharedWeights object itself, or the SharedWeight actor that owns it. */
  sharedWeights: TiedReduction;
  /** This replica's data-parallel rank and the reduction over its dp group (same stage, other replicas). */
  dataParallel: DataParallelRole;
  trace?: TraceRecorder;
  /** Every rank of this model replica (its stages and tp shards): the gradient norm is summed over them, so clipping sees the whole model. */
  modelParallelGroup: ProcessGroup;
  /**
   * Whether this rank's copy of a parameter counts in the norm: a copy held elsewhere too (the tied word
   * embedding on the last stage, a replicated parameter on tp ranks other than 0) counts once.
   */
  countsInNorm: (name: string) => boolean;
  /** fp16 mode: the dynamic loss scale, and every rank of the job to agree on overflows with. */
  mixedPrecision?: { scaler: DynamicLossScaler; worldGroup: ProcessGroup };
  /** The run's non-finite policy and skip count; omitted: config.nonFinite, uncounted. */
  nonFinite?: NonFiniteGuard;
  /** With config.parallel.overlapGradReduce: bytes of gradient per all-reduce bucket (default BUCKET_BYTES, DDP's 25 MB). */
  gradientBucketBytes?: number;
}

/** What REDUCE_TIED and OPTIMIZER_STEP ask of the SharedWeight side (shared-weights.ts has the details). */
export interface TiedReduction {
  readonly parameterNames: string[];
  startReduction(grads: Map<string, tf.Tensor>, options?: ReductionOptions): void;
  reduceGradients(grads: Map<string, tf.Tensor>, options?: ReductionOptions): Promise<void>;
}

export interface PipelineStepResult {
  /** The update was skipped: fp16 mode's overflow, or (with `nonFinite`) a loss or norm that was not finite. */
  skipped?: boolean;
  /** What was not finite, when that is why the step was skipped. */
  nonFinite?: string;
  /** fp16 mode: the loss scale this step used. */
  lossScale?: number;
  /** Mean loss over the global batch (meaningful on the last stage; 0 elsewhere). */
  loss: number;
  gradNorm: number;
  samples: number;
  /** This stage's median F, I and W time of the step (split backwards only): auto-zb places its W's from them. */
  opMs?: StageCosts;
}

/** What a stage knows after an evaluation: the loss where it computes it (every replica's, reduced). */
export interface StageEvaluation {
  /** The mean of the evaluated micro-batch losses over every replica; undefined on stages without the head. */
  loss?: number;
  /** Samples evaluated, over every replica. */
  samples: number;
}

/** Micro-batch `microBatch`'s tokens (every action on it reads them), gathered once into `batches`. */
function memoizedBatch(batches: Map<number, TokenBatch>, microBatchIds: Int32Array[], dataset: TokenizedDataset, microBatch: number, what: string): TokenBatch {
  const known = batches.get(microBatch);
  if (known !== undefined) return known;
  const sampleIds = microBatchIds[microBatch];
  if (sampleIds === undefined) throw new Error(`micro-batch ${microBatch} is not part of ${what} (${microBatchIds.length} micro-batches)`);
  const batch = { ...gatherBatch(dataset, sampleIds), sampleIds };
  batches.set(microBatch, batch);
  return batch;
}

/** The compile-time proof that execute's switch handles every action kind. */
function unknownAction(action: never): never {
  throw new Error(`unknown action ${JSON.stringify(action)}`);
}

/**
 * The executor of one stage's actions, step after step. `begin(step)` opens a step; `execute(action)`
 * runs one action in the order the scheduler sent them; OPTIMIZER_STEP ends the step with its result.
 */
export class PipelineStepExecutor {
  private step = -1;
  private batches = new Map<number, TokenBatch>();
  private microBatchIds: Int32Array[] = [];
  /**
   * overlapGradReduce: this step's data-parallel all-reduce, in buckets started as gradients become
   * final, and where the word embedding went early, its early sum and the rows still to reduce at the end.
   */
  private overlap: { reduction: BucketedGradientReduction; early?: { sum: tf.Tensor; rows: Int32Array } } | undefined;
  /** The evaluation running (between steps), after `step` steps. */
  private evaluation: { step: number; microBatchIds: Int32Array[]; batches: Map<number, TokenBatch> } | undefined;

  constructor(private readonly context: PipelineStepContext) {}

  beginEvaluation(step: number): void {
    const { config, validation, dataParallel, stage } = this.context;
    if (validation === undefined) throw new Error(`asked to evaluate after step ${step}, but this rank has no validation data`);
    if (this.step >= 0) throw new Error(`the evaluation after step ${step} opened while step ${this.step + 1} runs`);
    this.evaluation = { step, microBatchIds: evaluationMicroBatches(config, validation.numSamples, dataParallel.rank), batches: new Map() };
    stage.beginEvaluation();
  }

  async finishEvaluation(): Promise<StageEvaluation> {
    const evaluation = this.evaluation;
    if (evaluation === undefined) throw new Error('finishEvaluation without an evaluation');
    this.evaluation = undefined;
    const { stage, dataParallel } = this.context;
    const samples = evaluation.microBatchIds.reduce((sum, ids) => sum + ids.length, 0);
    if (!stage.computesLoss) return { samples: samples * dataParallel.size };
    let sums: Float32Array = Float32Array.of(stage.evaluationLossSum, evaluation.microBatchIds.length, samples);
    if (dataParallel.size > 1) sums = await dataParallel.allReduce(sums);
    return { loss: sums[0] / sums[1], samples: sums[2] };
  }

  begin(step: number): void {
    const { config, sampler, stage, dataParallel } = this.context;
    this.step = step;
    this.batches = new Map();
    const globalBatch = sampler.globalBatch(step);
    const m = config.numMicroBatches;
    // Micro-batch numbers run on over the accumulation rounds (lowering renumbers them): round r holds r*m..r*m+m-1.
    this.microBatchIds = [];
    for (let accumIndex = 0; accumIndex < config.gradientAccumulation; accumIndex++) {
      const indices = rankSlice(globalBatch, { dp: dataParallel.size, dpRank: dataParallel.rank, gradientAccumulation: config.gradientAccumulation, accumIndex });
      this.microBatchIds.push(...microBatches(indices, m));
    }
    this.endOverlap();
    let finals: FinalGradients | undefined;
    if (dataParallel.size > 1 && config.parallel.overlapGradReduce) {
      const { params } = this.context;
      // Held whole (pipeline 1), the word embedding (a third of the bytes) can go with the first bucket,
      // the flat buffer being cut from its end; elsewhere it waits for the end (tied: the SharedWeight reduction).
      const early = stage.holdsWholeWordEmbedding;
      const names = early ? [...[...params.keys()].filter((name) => name !== WORD_EMBEDDING), WORD_EMBEDDING] : [...params.keys()];
      const sizes = names.map((name) => params.get(name)!.size);
      const reduction = new BucketedGradientReduction(names, sizes, (values) => this.span(step, 'all-reduce data parallel', () => dataParallel.allReduce(values)), this.context.gradientBucketBytes);
      // Stages without the head hold a loss sum of 0 all along.
      if (!stage.computesLoss) reduction.setLoss(0);
      const overlap: NonNullable<typeof this.overlap> = { reduction };
      this.overlap = overlap;
      finals = {
        weightActionsPerChunk: m * config.gradientAccumulation,
        gradientFinal: (name, sum) => reduction.setGradient(name, sum),
        lossFinal: (lossSum) => reduction.setLoss(lossSum),
        ...(early
          ? {
              wordEmbeddingEarly: (sum: tf.Tensor, rows: Int32Array) => {
                overlap.early = { sum, rows };
                reduction.setGradient(WORD_EMBEDDING, sum);
              },
            }
          : {}),
      };
    }
    stage.beginStep(step, this.context.mixedPrecision?.scaler.scale ?? 1, finals);
  }

  /** `work` as a span of the step on the timeline, when there is one. */
  private span<T>(step: number, name: string, work: () => Promise<T>): Promise<T> {
    const trace = this.context.trace;
    return trace === undefined ? work() : trace.span(name, 'comm', { step: step + 1 }, work);
  }

  /**
   * The step's means over the global batch: what the buckets started during the backward did not cover
   * (the tied word embedding, after its SharedWeight reduction; the loss) goes now, or, without
   * overlapGradReduce, the whole flat buffer in one all-reduce.
   */
  private async stepMeans(step: number, grads: Map<string, tf.Tensor>, scale: number): Promise<StepMeans> {
    const { params, stage, dataParallel } = this.context;
    const overlap = this.overlap;
    if (overlap === undefined) {
      const allReduce = dataParallel.size === 1 ? undefined : (flat: Float32Array) => this.span(step, 'all-reduce data parallel', () => dataParallel.allReduce(flat));
      return averageOverGlobalBatch([...params.keys()], grads, stage.stepLossSum, scale, allReduce);
    }
    const { reduction, early } = overlap;
    for (const name of reduction.names) {
      if (!reduction.isPending(name)) continue;
      const sum = grads.get(name);
      if (sum === undefined) throw new Error(`no gradient for parameter ${name}: the backward pass did not reach it`);
      reduction.setGradient(name, sum);
    }
    if (!reduction.lossGiven) reduction.setLoss(stage.stepLossSum);
    const flat = await reduction.finish();
    if (early !== undefined) await this.reduceLastLookupRows(step, flat, reduction.offsetOf(WORD_EMBEDDING), grads.get(WORD_EMBEDDING)!, early.rows);
    this.endOverlap();
    return meansOfReduced(reduction.names, grads, flat, scale);
  }

  /**
   * The word embedding went early, right but for the rows the step's last lookup added to, on any
   * replica: those rows of the final sums are all-reduced now (a few hundred rows instead of the whole
   * table) and written over the early result. Which rows: every replica's, summed as a 0/1 mask.
   */
  private async reduceLastLookupRows(step: number, flat: Float32Array, offset: number, finalSum: tf.Tensor, lastLookupRows: Int32Array): Promise<void> {
    const { dataParallel } = this.context;
    const [vocab, hidden] = finalSum.shape as [number, number];
    const mask = new Float32Array(vocab);
    for (const row of lastLookupRows) mask[row] = 1;
    const everyReplica = await this.span(step, 'all-reduce data parallel', () => dataParallel.allReduce(mask));
    const rows = Int32Array.from(Array.from(everyReplica.keys()).filter((row) => everyReplica[row] > 0));
    if (rows.length === 0) return;
    const picked = tf.gather(finalSum, rows);
    let values: Float32Array;
    try {
      values = (await picked.data()) as Float32Array;
    } finally {
      picked.dispose();
    }
    const reduced = await this.span(step, 'all-reduce data parallel', () => dataParallel.allReduce(values));
    rows.forEach((row, i) => flat.set(reduced.subarray(i * hidden, (i + 1) * hidden), offset + row * hidden));
  }

  /** Forgets the step's overlapped reduction, freeing the word embedding's early sum. */
  private endOverlap(): void {
    this.overlap?.early?.sum.dispose();
    this.overlap = undefined;
  }

  /** Runs one action; returns the step's result after OPTIMIZER_STEP, undefined before. */
  async execute(action: StageAction): Promise<PipelineStepResult | undefined> {
    const evaluation = this.evaluation;
    if (evaluation !== undefined) {
      if (action.kind !== 'F') throw new Error(`action ${formatAction(action)} in the evaluation after step ${evaluation.step}: an evaluation runs forwards only`);
      await this.context.stage.evaluationForward(action, this.evaluationBatchOf(evaluation, action.microBatch), evaluation.step);
      return undefined;
    }
    if (this.step < 0) throw new Error(`action ${formatAction(action)} arrived outside a step`);
    switch (action.kind) {
      case 'F':
      case 'B':
      case 'I':
      case 'W':
        await this.context.stage.run(action, (id) => this.batchOf(id));
        return undefined;
      case 'REDUCE_TIED':
        this.context.sharedWeights.startReduction(this.context.stage.stepGradients, this.tiedOptions());
        return undefined;
      case 'OPTIMIZER_STEP': {
        const step = this.step;
        // Taken before the update, whose own time is no op of the schedule.
        const opMs = costsOfStep(this.context.stage.stepOpMs);
        try {
          const result = await this.finish(step);
          return opMs === undefined ? result : { ...result, opMs };
        } finally {
          this.step = -1;
          this.batches = new Map();
        }
      }
      default:
        return unknownAction(action);
    }
  }

  private batchOf(microBatch: number): TokenBatch {
    return memoizedBatch(this.batches, this.microBatchIds, this.context.dataset, microBatch, `step ${this.step + 1}`);
  }

  private evaluationBatchOf(evaluation: NonNullable<typeof this.evaluation>, microBatch: number): TokenBatch {
    return memoizedBatch(evaluation.batches, evaluation.microBatchIds, this.context.validation!, microBatch, 'the evaluation');
  }

  /** The first stage's word-embedding gradient is +0 outside the rows its lookups gathered. */
  private tiedOptions(): ReductionOptions {
    const stage = this.context.stage;
    return { rowsTouched: (name: string) => (name === WORD_EMBEDDING ? stage.embeddingRowsTouched() : undefined), trace: this.context.trace, step: this.step };
  }

  private async finish(step: number): Promise<PipelineStepResult> {
    const context = this.context;
    const { config, sampler, stage, params, optimizer, sharedWeights, dataParallel } = context;
    const globalBatch = sampler.globalBatch(step);
    const lossScale = context.mixedPrecision?.scaler.scale ?? 1;
    const m = config.numMicroBatches;
    const span = <T>(name: string, work: () => Promise<T>): Promise<T> => this.span(step, name, work);
    const grads = stage.stepGradients;
    await sharedWeights.reduceGradients(grads, this.tiedOptions());
    const scale = 1 / (m * config.gradientAccumulation * dataParallel.size);
    const means = await this.stepMeans(step, grads, scale);
    const guard = context.nonFinite ?? new NonFiniteGuard(config.nonFinite);
    const skip = (nonFinite?: string): PipelineStepResult => {
      for (const grad of means.grads.values()) grad.dispose();
      return { loss: means.loss, gradNorm: Number.NaN, samples: globalBatch.length, skipped: true, lossScale, ...(nonFinite === undefined ? {} : { nonFinite }) };
    };
    try {
      if (context.mixedPrecision !== undefined) {
        const { scaler, worldGroup } = context.mixedPrecision;
        // Any Inf or NaN anywhere makes the sum non-finite; the flags are MAX-reduced so every rank skips together.
        const localOverflow = Number.isFinite(await sumOfSquares([...means.grads.values()])) ? 0 : 1;
        // The loss rides along: a cross-entropy is >= 0 and stages without the head hold 0, so the max is the
        // loss itself, and Math.max keeps a NaN.
        const [overflow, loss] = await span('all-reduce overflow', () => worldGroup.allReduce(Float32Array.of(localOverflow, means.loss), 'max'));
        // No loss scale mends a loss that is not finite: that is the non-finite policy's case, not an overflow.
        const what = guard.check(step + 1, { loss });
        if (what !== undefined) return skip(what);
        if (scaler.update(overflow > 0).skip) return skip();
        for (const [name, grad] of means.grads) {
          means.grads.set(name, tf.mul(grad, 1 / lossScale));
          grad.dispose();
        }
      }
      const localSquares = await sumOfSquares([...means.grads].filter(([name]) => context.countsInNorm(name)).map(([, grad]) => grad));
      const group = context.modelParallelGroup;
      // The loss rides along (0 on stages without the head): a NaN or Infinity survives the sum, so every
      // rank of the replica learns whether the loss was finite from the reduction it makes anyway.
      const reduced =
        group.size === 1 ? Float32Array.of(localSquares, means.loss) : await span('all-reduce grad norm', () => group.allReduce(Float32Array.of(localSquares, means.loss), 'sum'));
      const gradNorm = Math.sqrt(reduced[0]);
      const what = guard.check(step + 1, { loss: reduced[1], gradNorm });
      if (what !== undefined) return skip(what);
      const optimizerStart = wallClockMs();
      await optimizer.apply(params, means.grads, { gradNorm, learningRate: learningRateAt(config.optimizer, step + 1, context.totalSteps) });
      context.trace?.record('optimizer step', 'compute', optimizerStart, wallClockMs(), { step: step + 1 });
      for (const grad of means.grads.values()) grad.dispose();
      return { loss: means.loss, gradNorm, samples: globalBatch.length, lossScale };
    } catch (error) {
      for (const grad of means.grads.values()) if (!grad.isDisposed) grad.dispose();
      throw error;
    }
  }
}

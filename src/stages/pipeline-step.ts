/**
 * Implements: one optimizer step of a pipeline stage: the scheduler's ops for every accumulation round,
 * then the SharedWeight reduction of the tied embedding (begun right after the last backward of the
 * chunk holding it, so the last stage's transfer overlaps the first stage's remaining backward), the
 * data-parallel reduction, and the update.
 * The arithmetic mirrors the single-process Trainer: gradients and losses are sums over micro-batches,
 * scaled once by 1 / (micro-batches x accumulation rounds x dp). A loss or gradient norm that is not
 * finite is caught before the update (config nonFinite): every rank sees the same reduced values, so the
 * whole job stops or skips the step together.
 */
import type { ProcessGroup } from '../comm/collectives.ts';
import type { TrainConfig } from '../config/types.ts';
import * as tf from '../tf.ts';
import { gatherBatch, microBatches, rankSlice, type BatchSampler } from '../dataset/sampler.ts';
import type { TokenizedDataset } from '../dataset/webtext.ts';
import type { TokenBatch } from '../model/gpt.ts';
import { WORD_EMBEDDING } from '../model/params.ts';
import type { SharedWeights } from '../shared-weights/shared-weights.ts';
import { averageOverGlobalBatch } from '../train/gradient-reduction.ts';
import type { DynamicLossScaler } from '../train/loss-scaler.ts';
import { NonFiniteGuard } from '../train/non-finite.ts';
import { sumOfSquares, type AdamOptimizer } from '../train/optimizer.ts';
import type { DataParallelRole } from '../train/trainer.ts';
import type { PipelineOp } from '../scheduler/ops.ts';
import type { PipelineStage } from './stage.ts';
import { wallClockMs, type TraceRecorder } from './trace.ts';

export interface PipelineStepContext {
  config: TrainConfig;
  dataset: TokenizedDataset;
  sampler: BatchSampler;
  stage: PipelineStage;
  /** All parameters of the stage by name (its chunks merged). */
  params: Map<string, tf.Variable>;
  optimizer: AdamOptimizer;
  sharedWeights: SharedWeights;
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
}

export async function runPipelineStep(context: PipelineStepContext, step: number, ops: PipelineOp[]): Promise<PipelineStepResult> {
  const { config, dataset, sampler, stage, params, optimizer, sharedWeights, dataParallel } = context;
  const globalBatch = sampler.globalBatch(step);
  const lossScale = context.mixedPrecision?.scaler.scale ?? 1;
  stage.beginStep(step, lossScale);
  const m = config.numMicroBatches;
  const span = <T>(name: string, work: () => Promise<T>): Promise<T> => (context.trace === undefined ? work() : context.trace.span(name, 'comm', { step: step + 1 }, work));
  // The first stage's word-embedding gradient is +0 outside the rows its lookups gathered.
  const tied = { rowsTouched: (name: string) => (name === WORD_EMBEDDING ? stage.embeddingRowsTouched() : undefined), trace: context.trace, step };
  const sharedNames = sharedWeights.parameterNames;
  const lastTiedBackward = ops.findLastIndex((op) => op.kind === 'B' && sharedNames.some((name) => stage.chunks[op.chunk].params.has(name)));
  for (let accumIndex = 0; accumIndex < config.gradientAccumulation; accumIndex++) {
    const indices = rankSlice(globalBatch, { dp: dataParallel.size, dpRank: dataParallel.rank, gradientAccumulation: config.gradientAccumulation, accumIndex });
    const micro = microBatches(indices, m);
    const batches = new Map<number, TokenBatch>();
    const batchOf = (microBatch: number): TokenBatch => {
      let batch = batches.get(microBatch);
      if (batch === undefined) {
        const sampleIds = micro[microBatch];
        batch = { ...gatherBatch(dataset, sampleIds), sampleIds };
        batches.set(microBatch, batch);
      }
      return batch;
    };
    // Accumulation rounds reuse the schedule with micro-batch numbers shifted, so message tags stay unique.
    for (const [index, op] of ops.entries()) {
      await stage.run({ ...op, microBatch: op.microBatch + accumIndex * m }, (id) => batchOf(id - accumIndex * m));
      if (index === lastTiedBackward && accumIndex === config.gradientAccumulation - 1) sharedWeights.startReduction(stage.stepGradients, tied);
    }
  }
  const grads = stage.stepGradients;
  await sharedWeights.reduceGradients(grads, tied);
  const scale = 1 / (m * config.gradientAccumulation * dataParallel.size);
  const allReduce = dataParallel.size === 1 ? undefined : (flat: Float32Array) => span('all-reduce data parallel', () => dataParallel.allReduce(flat));
  const means = await averageOverGlobalBatch([...params.keys()], grads, stage.stepLossSum, scale, allReduce);
  const guard = context.nonFinite ?? new NonFiniteGuard(config.nonFinite);
  const skip = (nonFinite?: string): PipelineStepResult => {
    for (const grad of means.grads.values()) grad.dispose();
    return { loss: means.loss, gradNorm: Number.NaN, samples: globalBatch.length, skipped: true, lossScale, ...(nonFinite === undefined ? {} : { nonFinite }) };
  };
  try {
    if (context.mixedPrecision !== undefined) {
      const { scaler, worldGroup } = context.mixedPrecision;
      // Any Inf or NaN anywhere makes the sum non-finite; the flags are MAX-reduced so every rank skips together.
      const localOverflow = Number.isFinite(sumOfSquares([...means.grads.values()])) ? 0 : 1;
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
    const localSquares = sumOfSquares([...means.grads].filter(([name]) => context.countsInNorm(name)).map(([, grad]) => grad));
    const group = context.modelParallelGroup;
    // The loss rides along (0 on stages without the head): a NaN or Infinity survives the sum, so every
    // rank of the replica learns whether the loss was finite from the reduction it makes anyway.
    const reduced =
      group.size === 1 ? Float32Array.of(localSquares, means.loss) : await span('all-reduce grad norm', () => group.allReduce(Float32Array.of(localSquares, means.loss), 'sum'));
    const gradNorm = Math.sqrt(reduced[0]);
    const what = guard.check(step + 1, { loss: reduced[1], gradNorm });
    if (what !== undefined) return skip(what);
    const optimizerStart = wallClockMs();
    optimizer.apply(params, means.grads, { gradNorm });
    context.trace?.record('optimizer step', 'compute', optimizerStart, wallClockMs(), { step: step + 1 });
    for (const grad of means.grads.values()) grad.dispose();
    return { loss: means.loss, gradNorm, samples: globalBatch.length, lossScale };
  } catch (error) {
    for (const grad of means.grads.values()) if (!grad.isDisposed) grad.dispose();
    throw error;
  }
}

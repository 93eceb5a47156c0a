/**
 * Implements: what an in-training evaluation covers and when it runs, the same for every layout.
 *
 * [Note: the evaluated samples] An evaluation reads the validation data in file order, in global
 * batches of the training's size G = batchSize x dp x gradientAccumulation: eval.batches of them (by
 * default every whole one). Each is cut exactly like a training batch (sampler.ts's slice order): dp
 * rank r, round a takes the block (a dp + r) batchSize, split into numMicroBatches micro-batches. Every
 * micro-batch then has the same shape, so the loss (the mean of the micro-batches' mean token losses,
 * as the training loss is) is the mean over every evaluated token position, whichever layout
 * computed it. No dropout, no gradients.
 *
 * [Note: when evaluations run] After step s when eval.every divides s, and after the run's last step;
 * never at the step a run starts from (a resumed run's evaluation of it was its predecessor's), and not
 * where a job stops early (a stop or a preemption signal ends it without one).
 */
import type { TrainConfig } from '../config/types.ts';
import { microBatches, rankSlice } from '../dataset/sampler.ts';

/** Whether the run has validation data (data.validPath or data.validFraction). */
export function evaluates(config: TrainConfig): boolean {
  return config.data.validPath !== undefined || config.data.validFraction > 0;
}

/** Whether an evaluation follows `completedSteps` (1-based) steps; see [Note: when evaluations run]. */
export function evaluationDue(config: TrainConfig, completedSteps: number, totalSteps: number): boolean {
  if (!evaluates(config) || completedSteps < 1) return false;
  return completedSteps === totalSteps || (config.eval.every > 0 && completedSteps % config.eval.every === 0);
}

export function globalBatchOf(config: TrainConfig): number {
  return config.batchSize * config.parallel.data * config.gradientAccumulation;
}

/** Global batches one evaluation reads from `validationSamples` samples; throws when there is not one whole. */
export function evaluationBatches(config: TrainConfig, validationSamples: number): number {
  const size = globalBatchOf(config);
  const whole = Math.floor(validationSamples / size);
  if (whole === 0) {
    throw new Error(
      `the validation data has ${validationSamples} samples, fewer than one global batch of ${size} (batchSize x dp x gradientAccumulation): ` +
        'raise data.validFraction or use a bigger data.validPath file',
    );
  }
  return Math.min(whole, config.eval.batches ?? whole);
}

/** How many micro-batches each data-parallel rank evaluates. */
export function evaluationMicroBatchCount(config: TrainConfig, validationSamples: number): number {
  return evaluationBatches(config, validationSamples) * config.gradientAccumulation * config.numMicroBatches;
}

/** The micro-batches (sample indices of the validation data) data-parallel rank `dpRank` evaluates, in order. */
export function evaluationMicroBatches(config: TrainConfig, validationSamples: number, dpRank: number): Int32Array[] {
  const size = globalBatchOf(config);
  const result: Int32Array[] = [];
  for (let batch = 0; batch < evaluationBatches(config, validationSamples); batch++) {
    const globalBatch = Int32Array.from({ length: size }, (_, i) => batch * size + i);
    for (let accumIndex = 0; accumIndex < config.gradientAccumulation; accumIndex++) {
      const indices = rankSlice(globalBatch, { dp: config.parallel.data, dpRank, gradientAccumulation: config.gradientAccumulation, accumIndex });
      result.push(...microBatches(indices, config.numMicroBatches));
    }
  }
  return result;
}

/** What one evaluation measured. */
export interface EvaluationResult {
  /** 1-based: the steps done when it ran. */
  step: number;
  loss: number;
  perplexity: number;
  samples: number;
  elapsedMs: number;
}

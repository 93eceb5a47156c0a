/**
 * Implements: the batch sampler of a training config: the global batch is batchSize x dp x
 * gradientAccumulation samples, drawn in the config's seeded order. Every layout builds it here, which
 * is what makes step k use the same samples in all of them.
 */
import type { TrainConfig } from '../config/types.ts';
import { BatchSampler } from '../dataset/sampler.ts';
import { lrScheduleProblem } from './lr-schedule.ts';

export function globalBatchSampler(config: TrainConfig, numSamples: number): BatchSampler {
  return new BatchSampler({
    numSamples,
    globalBatchSize: config.batchSize * config.parallel.data * config.gradientAccumulation,
    seed: config.seed,
    shuffle: config.data.shuffle,
    dropLast: config.data.dropLast,
  });
}

/**
 * The step a run stops at: an explicit override (--steps), else the config's steps, else its epochs (1)
 * of the sampler's steps. The learning rate schedule's decay ends there unless decaySteps says otherwise,
 * so its settings are checked against it here, where the run's length is first known.
 */
export function totalStepsOf(config: TrainConfig, sampler: BatchSampler, override?: number): number {
  const totalSteps = override ?? config.steps ?? (config.epochs ?? 1) * sampler.stepsPerEpoch;
  const problem = lrScheduleProblem(config.optimizer, totalSteps);
  if (problem !== undefined) throw new Error(`config: ${problem.message}`);
  return totalSteps;
}

/**
 * Implements: the learning rate of every step, with Megatron's schedules (OptimizerParamScheduler:
 * `--lr-decay-style constant|linear|cosine|inverse-square-root`, `--lr-warmup-iters`, `--min-lr`,
 * `--lr-decay-iters`), as a pure function of the step: every rank, the launcher's log line and a resumed
 * run compute the same value from the config, the step and the run's length, with no state to save.
 *
 * Steps count from 1 (the update being applied), so warmup rises linearly from 0 and the first step
 * already moves the weights (lr / warmupSteps; Megatron's first iteration runs at 0):
 *   warmup, step <= warmupSteps:   lr * step / warmupSteps
 *   constant:                      lr
 *   inverse-square-root:           max(minLr, lr * sqrt(max(warmupSteps, 1)) / sqrt(step))
 *   linear, cosine: with r = (step - warmupSteps) / (decaySteps - warmupSteps), and minLr from decaySteps on,
 *     linear:                      minLr + (lr - minLr) * (1 - r)
 *     cosine:                      minLr + (lr - minLr) * (1 + cos(pi r)) / 2
 * A step skipped for a non-finite loss still advances the schedule (the step number does), as nanoGPT's.
 */
import type { OptimizerConfig } from '../config/types.ts';

export const LR_SCHEDULES = ['constant', 'linear', 'cosine', 'inverse-square-root'] as const;
export type LrScheduleKind = (typeof LR_SCHEDULES)[number];

export type LrScheduleConfig = Pick<OptimizerConfig, 'lr' | 'schedule' | 'warmupSteps' | 'minLr' | 'decaySteps'>;

/** The learning rate of 1-based `step` of a run of `runSteps` steps (decaySteps' default). */
export function learningRateAt(config: LrScheduleConfig, step: number, runSteps: number): number {
  if (!(Number.isInteger(step) && step >= 1)) throw new Error(`learningRateAt: steps count from 1, got ${step}`);
  const { lr, warmupSteps, minLr } = config;
  if (warmupSteps > 0 && step <= warmupSteps) return (lr * step) / warmupSteps;
  switch (config.schedule) {
    case 'constant':
      return lr;
    case 'inverse-square-root':
      return Math.max(minLr, (lr * Math.sqrt(Math.max(warmupSteps, 1))) / Math.sqrt(step));
    case 'linear':
    case 'cosine': {
      const decaySteps = config.decaySteps ?? runSteps;
      if (step >= decaySteps) return minLr;
      const ratio = (step - warmupSteps) / (decaySteps - warmupSteps);
      const coefficient = config.schedule === 'linear' ? 1 - ratio : 0.5 * (1 + Math.cos(Math.PI * ratio));
      return minLr + (lr - minLr) * coefficient;
    }
  }
}

/** What is wrong with a schedule's settings for a run of `runSteps` steps, and the key to change, or undefined. */
export function lrScheduleProblem(config: LrScheduleConfig, runSteps?: number): { path: string; message: string } | undefined {
  if (config.minLr > config.lr) return { path: 'optimizer.minLr', message: `optimizer.minLr (${config.minLr}) is above optimizer.lr (${config.lr}); the schedule decays from lr down to minLr` };
  if (config.schedule !== 'linear' && config.schedule !== 'cosine') return undefined;
  const decaySteps = config.decaySteps ?? runSteps;
  if (decaySteps !== undefined && decaySteps <= config.warmupSteps) {
    const which = config.decaySteps === undefined ? `the run's ${decaySteps} steps (decaySteps' default)` : `optimizer.decaySteps (${decaySteps})`;
    return { path: 'optimizer.decaySteps', message: `${which} must exceed optimizer.warmupSteps (${config.warmupSteps}) for a ${config.schedule} decay; give a longer decaySteps or fewer warmupSteps` };
  }
  return undefined;
}

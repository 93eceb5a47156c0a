/**
 * Implements: node 0's view of training progress: rank 0's step reports, as the coordinator passes them
 * on, become the trainer hooks' StepResults (metrics.jsonl, progress, epochs), so a distributed job
 * reports through the same hooks as a single-process one; so do its evaluations.
 */
import { learningRateAt } from '../train/lr-schedule.ts';
import type { EvaluationDoneMessage, StepDoneMessage } from '../protocol/messages.ts';
import type { TrainConfig } from '../config/types.ts';
import type { BatchSampler } from '../dataset/sampler.ts';
import type { Hook, StepResult, TrainerState } from '../train/hooks/hook.ts';

export class StepReporter {
  private readonly state: TrainerState;
  private readonly started = performance.now();
  private epoch = -1;

  constructor(
    config: TrainConfig,
    totalSteps: number,
    startStep: number,
    private readonly sampler: BatchSampler,
    private readonly hooks: Hook[],
    log: (line: string) => void,
  ) {
    this.state = { config, totalSteps, startStep, stepsPerEpoch: sampler.stepsPerEpoch, metrics: {}, log };
    for (const hook of hooks) hook.beforeTrain?.(this.state);
  }

  report(report: StepDoneMessage): void {
    const epoch = this.sampler.epochOf(report.step - 1);
    if (epoch !== this.epoch) {
      if (this.epoch >= 0) for (const hook of this.hooks) hook.afterEpoch?.(this.state, this.epoch);
      this.epoch = epoch;
      for (const hook of this.hooks) hook.beforeEpoch?.(this.state, epoch);
    }
    this.state.metrics = {};
    const result: StepResult = {
      step: report.step,
      epoch,
      loss: report.loss,
      tokens: report.tokens,
      samples: this.sampler.globalBatchSize,
      stepMs: report.stepMs,
      elapsedMs: performance.now() - this.started,
      learningRate: learningRateAt(this.state.config.optimizer, report.step, this.state.totalSteps),
      gradNorm: report.gradNorm,
      ...(report.skipped === undefined ? {} : { skipped: report.skipped }),
      ...(report.nonFinite === undefined ? {} : { nonFinite: report.nonFinite }),
      ...(report.lossScale === undefined ? {} : { lossScale: report.lossScale }),
      ...(report.rssMb === undefined ? {} : { rssMb: report.rssMb }),
    };
    for (const hook of this.hooks) hook.afterStep?.(this.state, result);
  }

  reportEvaluation(report: EvaluationDoneMessage): void {
    const result = { step: report.step, loss: report.loss, perplexity: Math.exp(report.loss), samples: report.samples, elapsedMs: report.elapsedMs };
    for (const hook of this.hooks) hook.afterEvaluation?.(this.state, result);
  }

  end(): void {
    if (this.epoch >= 0) for (const hook of this.hooks) hook.afterEpoch?.(this.state, this.epoch);
    for (const hook of this.hooks) hook.afterTrain?.(this.state);
  }
}

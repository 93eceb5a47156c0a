/** Implements: LossHook: the step's loss and the running mean loss of the current epoch. */
import type { Hook, StepResult, TrainerState } from './hook.ts';

export class LossHook implements Hook {
  readonly name = 'loss';
  private sum = 0;
  private count = 0;

  beforeEpoch(): void {
    this.sum = 0;
    this.count = 0;
  }

  afterStep(state: TrainerState, result: StepResult): void {
    this.sum += result.loss;
    this.count += 1;
    state.metrics.loss = result.loss;
    state.metrics.epoch_loss = this.sum / this.count;
  }
}

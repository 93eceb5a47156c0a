/**
 * Implements: ThroughputHook: tokens per second and achieved model FLOP/s of each step (Megatron's
 * FLOPs formula, see src/model/flops.ts), and their means over the epoch.
 */
import { modelFlopsPerStep } from '../../model/flops.ts';
import type { Hook, StepResult, TrainerState } from './hook.ts';

export class ThroughputHook implements Hook {
  readonly name = 'throughput';
  private epochTokens = 0;
  private epochMs = 0;
  private epochFlops = 0;

  beforeEpoch(): void {
    this.epochTokens = 0;
    this.epochMs = 0;
    this.epochFlops = 0;
  }

  afterStep(state: TrainerState, result: StepResult): void {
    const seconds = result.stepMs / 1000;
    const flops = modelFlopsPerStep(state.config.model, state.config.seqLen, result.tokens);
    this.epochTokens += result.tokens;
    this.epochMs += result.stepMs;
    this.epochFlops += flops;
    state.metrics.tokens_per_s = result.tokens / seconds;
    state.metrics.model_gflops = flops / seconds / 1e9;
    state.metrics.epoch_tokens_per_s = this.epochTokens / (this.epochMs / 1000);
    state.metrics.epoch_model_gflops = this.epochFlops / (this.epochMs / 1000) / 1e9;
  }
}

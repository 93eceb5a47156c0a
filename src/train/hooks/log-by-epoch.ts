/** Implements: LogMetricByEpochHook: one summary line per finished epoch (mean loss and throughput). */
import type { Hook, TrainerState } from './hook.ts';

export class LogMetricByEpochHook implements Hook {
  readonly name = 'log-by-epoch';

  afterEpoch(state: TrainerState, epoch: number): void {
    const m = state.metrics;
    const parts = [`epoch ${epoch + 1} done`];
    if (m.epoch_loss !== undefined) parts.push(`mean loss ${m.epoch_loss.toFixed(4)}`);
    if (m.epoch_tokens_per_s !== undefined) parts.push(`${Math.round(m.epoch_tokens_per_s)} tok/s`);
    if (m.epoch_model_gflops !== undefined) parts.push(`${m.epoch_model_gflops.toFixed(2)} model GFLOP/s`);
    state.log(parts.join('  '));
  }
}

/**
 * Implements: LogMetricByStepHook: one JSON object per optimizer step appended to `metrics.jsonl`, and
 * the live view: a progress bar redrawn in place on a terminal, otherwise (logs, CI, pipes) a line every
 * `logInterval` steps with what Megatron's log line holds: an ISO timestamp, step of total, consumed
 * samples, ms a step, model GFLOP/s per rank, lr, loss, grad norm, loss scale (fp16), skipped and nan
 * steps. An evaluation adds a line of its own to both, `val_loss` and `val_ppl`
 * at the step it followed (a metrics line with `val_loss` and no `loss`).
 */
import { appendFileSync } from 'node:fs';
import type { EvaluationResult } from '../evaluation-plan.ts';
import type { Hook, StepResult, TrainerState } from './hook.ts';

export interface LogByStepOptions {
  /** File to append one JSON line per step to; omitted: no file. */
  metricsPath?: string;
  /** Where the live view goes. */
  stream?: NodeJS.WriteStream;
  /** Force the progress bar on or off; default: on when the stream is a terminal. */
  progressBar?: boolean;
}

export class LogMetricByStepHook implements Hook {
  readonly name = 'log-by-step';
  private readonly stream: NodeJS.WriteStream;
  private readonly progressBar: boolean;
  private barDrawn = false;
  /** Steps of this run whose update was skipped, and of those the ones with a non-finite loss or norm. */
  private skippedSteps = 0;
  private nanSteps = 0;

  constructor(private readonly options: LogByStepOptions = {}) {
    this.stream = options.stream ?? process.stdout;
    this.progressBar = options.progressBar ?? this.stream.isTTY === true;
  }

  afterStep(state: TrainerState, result: StepResult): void {
    const m = state.metrics;
    if (result.skipped === true) this.skippedSteps++;
    if (result.nonFinite === true) this.nanSteps++;
    const time = new Date().toISOString();
    const consumedSamples = result.step * result.samples;
    const lossScale = state.config.fp16 === undefined ? undefined : result.lossScale;
    if (this.options.metricsPath !== undefined) {
      const record = {
        step: result.step,
        time,
        consumed_samples: consumedSamples,
        epoch: result.epoch,
        loss: result.loss,
        tokens: result.tokens,
        samples: result.samples,
        step_ms: round(result.stepMs, 3),
        elapsed_ms: round(result.elapsedMs, 3),
        tokens_per_s: round(m.tokens_per_s ?? result.tokens / (result.stepMs / 1000), 3),
        model_gflops: m.model_gflops === undefined ? undefined : round(m.model_gflops, 4),
        lr: result.learningRate,
        grad_norm: result.gradNorm,
        loss_scale: lossScale,
        skipped_steps: this.skippedSteps,
        nan_steps: this.nanSteps,
        rss_mb: result.rssMb,
      };
      appendFileSync(this.options.metricsPath, JSON.stringify(record) + '\n');
    }
    const summary =
      `step ${result.step}/${state.totalSteps}  loss ${result.loss.toFixed(4)}  lr ${result.learningRate.toExponential(3)}  ` +
      `${Math.round(m.tokens_per_s ?? 0)} tok/s  ${(m.model_gflops ?? 0).toFixed(2)} GFLOP/s  ` +
      `${(result.stepMs / 1000).toFixed(2)} s/step`;
    if (this.progressBar) {
      const done = result.step - state.startStep;
      const total = state.totalSteps - state.startStep;
      const width = 24;
      const filled = Math.round((width * done) / Math.max(total, 1));
      const eta = ((total - done) * result.elapsedMs) / Math.max(done, 1) / 1000;
      this.stream.write(`\r[${'='.repeat(filled)}${' '.repeat(width - filled)}] ${summary}  eta ${eta.toFixed(0)} s\x1b[K`);
      this.barDrawn = true;
    } else if (result.step % state.config.logInterval === 0 || result.step === state.totalSteps) {
      const { data, pipeline, tensor } = state.config.parallel;
      const perRank = (m.model_gflops ?? 0) / (data * pipeline * tensor.size);
      const parts = [
        time,
        `step ${result.step}/${state.totalSteps}`,
        `consumed samples ${consumedSamples}`,
        `${result.stepMs.toFixed(1)} ms/step`,
        perRank >= 1000 ? `${(perRank / 1000).toFixed(2)} TFLOP/s per rank` : `${perRank.toFixed(2)} GFLOP/s per rank`,
        `lr ${result.learningRate.toExponential(3)}`,
        `loss ${result.loss.toFixed(4)}`,
        `grad norm ${formatNorm(result.gradNorm)}`,
        ...(lossScale === undefined ? [] : [`loss scale ${lossScale}`]),
        `skipped ${this.skippedSteps}`,
        `nan ${this.nanSteps}`,
      ];
      this.stream.write(parts.join('  ') + '\n');
    }
  }

  afterEvaluation(state: TrainerState, result: EvaluationResult): void {
    if (this.options.metricsPath !== undefined) {
      const record = { step: result.step, val_loss: result.loss, val_ppl: result.perplexity, val_samples: result.samples, val_ms: round(result.elapsedMs, 3) };
      appendFileSync(this.options.metricsPath, JSON.stringify(record) + '\n');
    }
    // Megatron prints validation on a line of its own, between the step lines.
    this.endBarLine();
    this.stream.write(
      `validation after step ${result.step}/${state.totalSteps}  val_loss ${result.loss.toFixed(4)}  val_ppl ${formatPerplexity(result.perplexity)}  ` +
        `(${result.samples} samples, ${(result.elapsedMs / 1000).toFixed(2)} s)\n`,
    );
  }

  /** Ends the bar's line so what others print next starts on a line of its own. */
  afterEpoch(): void {
    this.endBarLine();
  }

  afterTrain(): void {
    this.endBarLine();
  }

  private endBarLine(): void {
    if (this.barDrawn) this.stream.write('\n');
    this.barDrawn = false;
  }
}

function formatNorm(norm: number): string {
  return Number.isFinite(norm) ? norm.toFixed(3) : String(norm);
}

function formatPerplexity(perplexity: number): string {
  return perplexity < 1e5 ? perplexity.toFixed(2) : perplexity.toExponential(3);
}

function round(value: number, digits: number): number {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}

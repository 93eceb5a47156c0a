/**
 * Implements: training runs of the real CLI for the bench (`gpt-hybrid train`, as a user starts them,
 * through the tests' CLI helper): the bench model's config, a run's metrics and trace, and its step
 * period. Several runs at once measure what two jobs on one machine get.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { runCli, writeTestConfig } from '../test/support/cli.ts';
import type { TraceEvent } from '../src/trace/trace.ts';
import { median } from './report.ts';

export interface BenchModel {
  model: Record<string, unknown>;
  batchSize: number;
  seqLen: number;
}

export interface TrainRun {
  out: string;
  /** metrics.jsonl, one object per step. */
  metrics: Array<{ step: number; elapsed_ms: number; step_ms: number; tokens: number }>;
  /** trace.json's events (multi-process jobs), else []. */
  trace: TraceEvent[];
  output: string;
}

/** A config file for the bench model on the Brown sample (the tests' config helper, with the model swapped). */
export function benchConfig(model: BenchModel): string {
  return writeTestConfig({ model: model.model, batchSize: model.batchSize, seqLen: model.seqLen, optimizer: { lr: 1e-4 } });
}

/** `gpt-hybrid train config --out out --steps steps --quiet --set ...`; throws with the output's tail when it fails. */
export async function train(config: string, out: string, steps: number, sets: string[] = [], extra: string[] = [], timeoutMs = 300_000): Promise<TrainRun> {
  const args = ['train', config, '--out', out, '--steps', String(steps), '--quiet', ...sets.flatMap((set) => ['--set', set]), ...extra];
  const { code, output } = await runCli(args, {}, timeoutMs);
  if (code !== 0) throw new Error(`gpt-hybrid ${args.join(' ')} exited with ${code}:\n${output.slice(-3000)}`);
  const metrics = readFileSync(join(out, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as TrainRun['metrics'][number]);
  const tracePath = join(out, 'trace.json');
  const trace = existsSync(tracePath) ? (JSON.parse(readFileSync(tracePath, 'utf8')) as { traceEvents: TraceEvent[] }).traceEvents : [];
  return { out, metrics, trace, output };
}

/**
 * The first step the bench measures in a training run. Step 1 pays one-time costs; step 2 still grew
 * the wasm heap of a pipeline's first stage by ~200 MB (measured: 525, 757, 970, 970 MB after steps 1-4,
 * and 220 ms of that step in the tied-gradient copy), which a run of thousands of steps never pays again.
 */
export const FIRST_MEASURED_STEP = 3;

/**
 * Median time between consecutive steps' ends from step `fromStep` on (elapsed_ms differences): what a
 * step costs in a running job, gate and reports included. The first step pays one-time costs.
 */
export function stepPeriodMs(run: TrainRun, fromStep = FIRST_MEASURED_STEP): number {
  const periods: number[] = [];
  for (let i = 1; i < run.metrics.length; i++) {
    if (run.metrics[i].step >= fromStep) periods.push(run.metrics[i].elapsed_ms - run.metrics[i - 1].elapsed_ms);
  }
  if (periods.length === 0) throw new Error(`${run.out}: no step after step ${fromStep - 1} to time; run more steps`);
  return median(periods);
}

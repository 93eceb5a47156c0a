/**
 * Implements: `activation_peak_ratio`, 1F1B's peak activation memory on the first stage over GPipe's
 * (pipeline 2, same micro-batches): the largest value of the first stage's "saved activations" counter
 * (bytes of the tensors it keeps for backwards not yet run, recorded by the stage itself) in each job's
 * trace. Theory: 1F1B holds at most p micro-batches there, GPipe all m, so the ratio is p / m.
 */
import { join } from 'node:path';
import { pipelineSets } from './pipeline.ts';
import { counterPeak } from './trace-analysis.ts';
import { train, type TrainRun } from './train-runs.ts';
import type { TraceEvent } from '../src/trace/trace.ts';

const FIRST_STAGE_RANK = 0;

export interface ActivationPeakResult {
  ratio: number;
  oneFOneBBytes: number;
  gpipeBytes: number;
}

export function firstStagePeak(trace: readonly TraceEvent[], schedule: string): number {
  const peak = counterPeak(trace, 'saved activations', FIRST_STAGE_RANK, 'bytes');
  if (peak === undefined || peak <= 0) throw new Error(`the ${schedule} job's trace has no "saved activations" counter for rank ${FIRST_STAGE_RANK}`);
  return peak;
}

/** `oneFOneB`: the pipeline job already run (measurePipeline); this runs the GPipe job beside it. */
export async function measureActivationPeak(
  options: { config: string; dir: string; microBatches: number; natsUrl: string; oneFOneB: TrainRun },
  say: (line: string) => void,
): Promise<ActivationPeakResult> {
  say(`  pipeline 2, ${options.microBatches} micro-batches, GPipe (2 steps), for its saved activations ...`);
  const gpipe = await train(options.config, join(options.dir, 'pp2-gpipe'), 2, pipelineSets('gpipe', options.microBatches), ['--nats', options.natsUrl]);
  const oneFOneBBytes = firstStagePeak(options.oneFOneB.trace, '1F1B');
  const gpipeBytes = firstStagePeak(gpipe.trace, 'GPipe');
  say(`    first stage peak: 1F1B ${(oneFOneBBytes / 2 ** 20).toFixed(1)} MiB, GPipe ${(gpipeBytes / 2 ** 20).toFixed(1)} MiB`);
  return { ratio: oneFOneBBytes / gpipeBytes, oneFOneBBytes, gpipeBytes };
}

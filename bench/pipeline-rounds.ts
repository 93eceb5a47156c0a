/**
 * Implements: the pipeline section's runs in alternating rounds. Each round runs one single-process
 * training alone, two at once, and the pipeline job of each schedule, back to back; figures are computed
 * per round (the ideal from that round's alone and pair runs, divided into that round's pipeline runs)
 * and reported as the mean with the spread over rounds.
 *
 * Why rounds: the ideal and the pipeline runs must see the same machine. Measured once each, a machine
 * busy during the two-at-once window gave concurrency 0.47 and pipeline_efficiency 1.48, above the
 * possible; alternating A, B, A, B puts both under the same conditions, and the spread shows how much
 * the conditions moved.
 */
import type { ScheduleKind } from '../src/scheduler/ops.ts';
import { concurrencyOf, runAlone, runPair } from './concurrency.ts';
import { runPipelineJob } from './pipeline.ts';
import type { TrainRun } from './train-runs.ts';

export interface PipelineRound {
  aloneMs: number;
  pairMs: [number, number];
  concurrency: number;
  /** The pipeline job of each schedule in this round. */
  runs: Map<ScheduleKind, TrainRun>;
}

export interface PipelineRoundsOptions {
  config: string;
  dir: string;
  steps: number;
  microBatches: number;
  natsUrl: string;
  schedules: readonly ScheduleKind[];
  rounds: number;
}

export async function measurePipelineRounds(options: PipelineRoundsOptions, say: (line: string) => void): Promise<PipelineRound[]> {
  const rounds: PipelineRound[] = [];
  for (let round = 0; round < options.rounds; round++) {
    say(`  round ${round + 1} of ${options.rounds}:`);
    const aloneMs = await runAlone(options.config, options.dir, `alone-${round}`, options.steps, say);
    const pairMs = await runPair(options.config, options.dir, options.steps, say, `pair-${round}`);
    const runs = new Map<ScheduleKind, TrainRun>();
    for (const schedule of options.schedules) {
      runs.set(schedule, await runPipelineJob({ ...options, schedule, name: `pp2-${schedule}-${round}` }, say));
    }
    rounds.push({ aloneMs, pairMs, concurrency: concurrencyOf(aloneMs, pairMs), runs });
  }
  return rounds;
}

/** The mean of per-round values and their range, for the figure's note. */
export function overRounds(values: readonly number[]): { mean: number; min: number; max: number; note: string } {
  const mean = values.reduce((sum, value) => sum + value, 0) / values.length;
  const [min, max] = [Math.min(...values), Math.max(...values)];
  const note = values.length === 1 ? '1 round' : `mean of ${values.length} rounds, ${min.toFixed(3)}-${max.toFixed(3)}`;
  return { mean, min, max, note };
}

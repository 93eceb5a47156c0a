/**
 * Implements: `concurrency`, what this machine allows two processes: the summed throughput of two
 * independent single-process trainings run at the same time over twice that of one run alone (two wasm
 * processes share memory bandwidth and caches even on two cores). The run alone is also the pipeline's
 * single-process reference; the bench runs them in rounds with the pipeline jobs (pipeline-rounds.ts),
 * so a machine whose load drifts during the bench biases neither side.
 */
import { join } from 'node:path';
import { stepPeriodMs, train } from './train-runs.ts';

/** Step period (ms) of one single-process training alone. */
export async function runAlone(config: string, dir: string, name: string, steps: number, say: (line: string) => void): Promise<number> {
  say(`  one single-process training alone (${steps} steps) ...`);
  const ms = stepPeriodMs(await train(config, join(dir, name), steps));
  say(`    ${ms.toFixed(0)} ms/step`);
  return ms;
}

/** Step periods (ms) of two single-process trainings started together. */
export async function runPair(config: string, dir: string, steps: number, say: (line: string) => void, name = 'pair'): Promise<[number, number]> {
  // One step more than alone: the median is not moved if one run's last step has the machine to itself.
  say(`  two independent single-process trainings at the same time (${steps + 1} steps each) ...`);
  const pair = await Promise.all([0, 1].map((i) => train(config, join(dir, `${name}-${i}`), steps + 1)));
  const ms = pair.map((run) => stepPeriodMs(run)) as [number, number];
  say(`    ${ms.map((x) => x.toFixed(0)).join(' and ')} ms/step`);
  return ms;
}

export function concurrencyOf(aloneMs: number, pairMs: [number, number]): number {
  return (1 / pairMs[0] + 1 / pairMs[1]) / (2 / aloneMs);
}

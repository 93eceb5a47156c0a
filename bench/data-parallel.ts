/**
 * Implements: `comm_fraction_dp2`, exposed communication over step time in data parallel 2: a real
 * `gpt-hybrid train` job of two worker processes (stage actors, the gradient all-reduce over the data
 * plane's direct links, as a user's job runs), read from the job's trace.json like the pipeline job's
 * (trace-analysis.ts). With parallel.overlapGradReduce (the default) every bucket is an all-reduce of
 * its own, started during the step's last backward; what of a bucket the rank spent computing is hidden.
 */
import { join } from 'node:path';
import { exposedCommFraction } from './trace-analysis.ts';
import { stepPeriodMs, train } from './train-runs.ts';

const DATA = 2;

export interface DataParallelResult {
  commFraction: number;
  perRank: Record<number, number>;
  /** The job's step period (median, from the first measured step). */
  stepMs: number;
  byName: Record<string, number>;
}

/** `globalBatch`: samples a step over both replicas (each trains on half). */
export async function measureDataParallel(
  options: { config: string; globalBatch: number; natsUrl: string; dir: string; steps: number; overlapGradReduce: boolean },
  say: (line: string) => void,
): Promise<DataParallelResult> {
  const overlap = options.overlapGradReduce;
  say(`  data parallel ${DATA} on two worker processes, the gradient all-reduce ${overlap ? 'in buckets during the last backward (overlapGradReduce, the default)' : 'after the backward (overlapGradReduce=false)'} (${options.steps} steps) ...`);
  const sets = [`parallel.data=${DATA}`, `batchSize=${options.globalBatch / DATA}`, `parallel.overlapGradReduce=${overlap}`];
  const run = await train(options.config, join(options.dir, overlap ? 'dp2-overlap' : 'dp2-after'), options.steps, sets, ['--nats', options.natsUrl]);
  const comm = exposedCommFraction(run.trace);
  const stepMs = stepPeriodMs(run);
  say(`    ${stepMs.toFixed(0)} ms/step, exposed communication ${Object.values(comm.perRank).map((f) => (100 * f).toFixed(1)).join('% / ')}%`);
  return { commFraction: comm.fraction, perRank: comm.perRank, stepMs, byName: comm.byName };
}

/**
 * Implements: a stage's op times as auto-zb takes them from a run (auto-zero-bubble.ts places W's
 * from them): each step's median F, I and W duration on every rank, then, per stage, the median over
 * the measured steps and over the ranks that run that stage (its tensor-parallel shards and the
 * data-parallel replicas). Medians, because one op that waited on the machine (another process, a
 * garbage collection) would pull a mean far more than it tells about the stage.
 */
import type { StageCosts } from './auto-zero-bubble.ts';

const MIN_OP_MS = 1e-3;

export function median(values: readonly number[]): number {
  if (values.length === 0) throw new Error('the median of no values');
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/**
 * One step's costs from its actions' durations (milliseconds, by action kind), or undefined where the
 * step did not split its backwards (no I or W to time).
 */
export function costsOfStep(durations: { readonly F: readonly number[]; readonly I: readonly number[]; readonly W: readonly number[] }): StageCosts | undefined {
  if (durations.F.length === 0 || durations.I.length === 0 || durations.W.length === 0) return undefined;
  // A schedule is placed from positive times; a clock too coarse for a tiny op must not read 0.
  const time = (values: readonly number[]) => Math.max(MIN_OP_MS, median(values));
  return { forward: time(durations.F), backwardInput: time(durations.I), backwardWeight: time(durations.W) };
}

/** Per kind, the median of several measurements of one stage. */
export function combineCosts(samples: readonly StageCosts[]): StageCosts {
  return {
    forward: median(samples.map((s) => s.forward)),
    backwardInput: median(samples.map((s) => s.backwardInput)),
    backwardWeight: median(samples.map((s) => s.backwardWeight)),
  };
}

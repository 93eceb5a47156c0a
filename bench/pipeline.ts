/**
 * Implements: the pipeline figures of one job, pipeline 2 on two worker processes with m micro-batches
 * and 1F1B, against the single-process run on the same global batch:
 * - `pp2_speedup`: single-process step time over the pipeline's (both from the runs' metrics);
 * - `pipeline_efficiency`: that over the speed-up this machine allows, 2 x concurrency x m / (m + p - 1);
 * - `bubble_ratio`: the measured bubble (mean of the stages', in each step's window) over (p - 1) / (m + p - 1),
 *   with the bubble the stages' imbalance alone would leave (the ops replayed without communication);
 * - `comm_fraction_pp2`: exposed communication over step time (trace-analysis.ts).
 * The job writes trace.json; its counters also give the 1F1B side of `activation_peak_ratio`.
 */
import { join } from 'node:path';
import { theoreticalBubbleOf } from '../src/scheduler/measure.ts';
import { buildSchedule } from '../src/scheduler/schedules.ts';
import type { ScheduleKind } from '../src/scheduler/ops.ts';
import { exposedCommFraction, pipelineShape, replayedBubble, scheduleInTrace, type PipelineShape } from './trace-analysis.ts';
import { stepPeriodMs, train, type BenchModel, type TrainRun } from './train-runs.ts';

export const PIPELINE_STAGES = 2;

/**
 * The model of the multi-process figures: 32 blocks, so that two stages can carry equal work at all.
 * With the fused kernels, the 50304-word LM head and its loss cost about 19 of these blocks: with 16
 * blocks the head's stage did more than half of the whole work whatever the split (measured stage
 * compute 1391 / 1699 ms), which caps any 2-stage pipeline below the ideal. With 32, the balanced
 * partition gives it 9 blocks and the measured stage compute is within 1% (2026 / 2039 ms).
 */
export const PIPELINE_JOB_MODEL: BenchModel = { model: { numLayers: 32, hiddenSize: 256, numAttentionHeads: 4, maxPositionEmbeddings: 64 }, batchSize: 8, seqLen: 64 };
export const PIPELINE_MICRO_BATCHES = 8;

/** The CLI settings of the bench's pipeline jobs. */
export function pipelineSets(schedule: ScheduleKind, microBatches: number): string[] {
  return [`parallel.pipeline=${PIPELINE_STAGES}`, `numMicroBatches=${microBatches}`, `schedule=${schedule}`, 'partition=balanced', ...(schedule === 'zbv' ? ['numChunks=2'] : [])];
}

export interface PipelineResult {
  pp2Speedup: number;
  pipelineEfficiency: number;
  ideal: number;
  bubbleRatio: number;
  commFraction: number;
  stepMs: number;
  shape: PipelineShape;
  theoreticalBubble: number;
  /** The bubble with the measured op times and free communication. */
  replayedBubble: number;
  commPerRank: Record<number, number>;
  commByName: Record<string, number>;
}

/** The pipeline job itself (`name` tells rounds apart); its figures come from `pipelineFigures` once the single-process reference is known. */
export async function runPipelineJob(
  options: { config: string; dir: string; steps: number; microBatches: number; natsUrl: string; schedule?: ScheduleKind; name?: string },
  say: (line: string) => void,
): Promise<TrainRun> {
  const schedule = options.schedule ?? '1f1b';
  say(`  pipeline ${PIPELINE_STAGES} on two worker processes, ${options.microBatches} micro-batches, ${schedule}, balanced partition (${options.steps} steps) ...`);
  const run = await train(options.config, join(options.dir, options.name ?? `pp2-${schedule}`), options.steps, pipelineSets(schedule, options.microBatches), ['--nats', options.natsUrl]);
  say(`    ${stepPeriodMs(run).toFixed(0)} ms/step`);
  return run;
}

export function pipelineFigures(run: TrainRun, microBatches: number, aloneMs: number, concurrency: number, schedule: ScheduleKind = '1f1b'): PipelineResult {
  const m = microBatches;
  const p = PIPELINE_STAGES;
  const stepMs = stepPeriodMs(run);
  const shape = pipelineShape(run.trace, p);
  const comm = exposedCommFraction(run.trace);
  const theory = theoreticalBubbleOf(schedule, p, m, schedule === 'zbv' ? 2 : 1);
  const pp2Speedup = aloneMs / stepMs;
  const ideal = (2 * concurrency * m) / (m + p - 1);
  return {
    pp2Speedup,
    pipelineEfficiency: pp2Speedup / ideal,
    ideal,
    bubbleRatio: shape.bubble / theory,
    commFraction: comm.fraction,
    stepMs,
    shape,
    theoreticalBubble: theory,
    // auto-zb's order (from step FIRST_MEASURED_STEP, where it switched) is the one its trace shows.
    replayedBubble: replayedBubble(run.trace, schedule === 'auto-zb' ? scheduleInTrace(run.trace, schedule, p, m) : buildSchedule(schedule, p, m, schedule === 'zbv' ? 2 : 1)),
    commPerRank: comm.perRank,
    commByName: comm.byName,
  };
}

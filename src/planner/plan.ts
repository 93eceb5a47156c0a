/**
 * Implements: planTraining, the pure planner behind `gpt-hybrid plan`: for every rank of the parallel
 * grid, its coordinates, layer ranges, parameter share and memory, computed from the parameter and
 * sharding tables without allocating a single tensor (a GPT-3 plan takes milliseconds).
 */
import type { GPTConfig } from '../model/config.ts';
import { countParameters } from '../model/params.ts';
import { paramsForRank } from '../model/sharding.ts';
import { ParallelGrid } from '../parallel/grid.ts';
import { BYTES_PER_FLOAT32, OPTIMIZER_BYTES_PER_PARAM, stageActivationBytes } from './memory.ts';
import { megatronParameterCount } from './param-count.ts';
import type { LayerRange } from '../parallel/partition.ts';
import { activationLimit } from '../scheduler/memory-bound.ts';
import { SCHEDULE_KINDS, type ScheduleKind } from '../scheduler/ops.ts';
import { partitionForRun } from '../parallel/run-partition.ts';

/** The part of a TrainConfig the planner reads; a resolved TrainConfig is one. */
export interface PlanInput {
  model: GPTConfig;
  parallel: { data: number; pipeline: number; tensor: { size: number } };
  numMicroBatches: number;
  numChunks: number;
  /** Samples per data-parallel rank per step. */
  batchSize: number;
  seqLen: number;
  /** Default: interleaved when numChunks > 1, else 1f1b (as resolveConfig decides). */
  schedule?: ScheduleKind;
  /** Default: uniform (as resolveConfig decides). */
  partition?: 'uniform' | 'balanced';
}

export interface PlanOptions {
  /** Grid axis order, fastest first (default the grid's, tp-dp-pp). */
  order?: string;
  /** Overrides the input's schedule. */
  schedule?: ScheduleKind;
}

export interface MemoryBytes {
  params: number;
  grads: number;
  optimizer: number;
  activations: number;
}

export interface RankPlan {
  rank: number;
  dp: number;
  pp: number;
  tp: number;
  /** [start, end) per model chunk. */
  layers: LayerRange[];
  /** Parameter elements this rank holds (its tp shards, the tied word-embedding copy included). */
  params: number;
  /** Of `params`, the last stage's copy of the tied word embedding (0 where the rank holds the original or none). */
  tiedCopyParams: number;
  /** Of `params`, those every tp rank holds whole (LayerNorms, position embedding, row-parallel biases). */
  replicatedParams: number;
  /** (micro-batch, chunk) forwards kept for backward at the peak. */
  microBatchesInFlight: number;
  bytes: MemoryBytes;
  totalBytes: number;
}

export interface TrainingPlan {
  layout: string;
  grid: { data: number; pipeline: number; tensor: number; order: string; world: number };
  schedule: ScheduleKind;
  numMicroBatches: number;
  microBatchSize: number;
  numChunks: number;
  seqLen: number;
  /** The whole model by Megatron's formula (param-count.ts). */
  totalParams: number;
  /** The whole model by our parameter table, the tied embedding counted once: totalParams + the final LayerNorm. */
  tableParams: number;
  ranks: RankPlan[];
}

function defaultSchedule(numChunks: number): ScheduleKind {
  return numChunks > 1 ? 'interleaved' : '1f1b';
}

function checkInput(input: PlanInput, schedule: ScheduleKind): void {
  const { numMicroBatches: m, numChunks: v, batchSize } = input;
  if (batchSize % m !== 0) {
    throw new Error(`batchSize ${batchSize} is not divisible by numMicroBatches ${m}; every micro-batch must hold the same number of samples`);
  }
  if (!(SCHEDULE_KINDS as readonly string[]).includes(schedule)) {
    throw new Error(`unknown schedule "${String(schedule)}"; use one of ${SCHEDULE_KINDS.join(', ')}`);
  }
  if (v > 1 && schedule !== 'interleaved' && schedule !== 'zbv') {
    throw new Error(`numChunks ${v} needs the interleaved or zbv schedule, not ${schedule}`);
  }
  if (schedule === 'zbv' && v !== 2) {
    throw new Error(`the zbv schedule needs numChunks 2 (its V goes down the stages and back up), not ${v}`);
  }
}

export function planTraining(input: PlanInput, options: PlanOptions = {}): TrainingPlan {
  const schedule = options.schedule ?? input.schedule ?? defaultSchedule(input.numChunks);
  checkInput(input, schedule);
  const grid = new ParallelGrid({
    data: input.parallel.data,
    pipeline: input.parallel.pipeline,
    tensor: input.parallel.tensor.size,
    ...(options.order === undefined ? {} : { order: options.order }),
  });
  const { model, numMicroBatches, numChunks, seqLen } = input;
  const microBatchSize = input.batchSize / numMicroBatches;
  const stages = partitionForRun({ ...input, schedule, partition: input.partition ?? 'uniform' });

  // Every data-parallel replica holds the same: compute each (pp, tp) position once.
  const byPosition = new Map<string, Omit<RankPlan, 'rank' | 'dp' | 'pp' | 'tp'>>();
  const position = (pp: number, tp: number) => {
    const key = `${pp}/${tp}`;
    let found = byPosition.get(key);
    if (found === undefined) {
      found = planPosition(input, grid, stages[pp]!, pp, tp, schedule, microBatchSize);
      byPosition.set(key, found);
    }
    return found;
  };

  const ranks: RankPlan[] = [];
  for (let rank = 0; rank < grid.world; rank++) {
    const c = grid.coordinates(rank);
    const shared = position(c.pp, c.tp);
    ranks.push({ rank, ...c, ...shared, layers: shared.layers.map(([s, e]) => [s, e] as LayerRange), bytes: { ...shared.bytes } });
  }
  return {
    layout: grid.describe(),
    grid: { ...grid.toJSON(), world: grid.world },
    schedule,
    numMicroBatches,
    microBatchSize,
    numChunks,
    seqLen,
    totalParams: megatronParameterCount(model),
    tableParams: countParameters(model),
    ranks,
  };
}

function planPosition(
  input: PlanInput,
  grid: ParallelGrid,
  layers: LayerRange[],
  pp: number,
  tp: number,
  schedule: ScheduleKind,
  microBatchSize: number,
): Omit<RankPlan, 'rank' | 'dp' | 'pp' | 'tp'> {
  const { model } = input;
  const held = paramsForRank(model, { layerRanges: layers, tp: grid.tensor, tpRank: tp });
  const params = held.reduce((n, p) => n + p.numel, 0);
  const replicatedParams = held.filter((p) => p.kind === 'replicated').reduce((n, p) => n + p.numel, 0);
  const holdsEmbedding = layers.some(([start]) => start === 0);
  const holdsHead = layers.some(([, end]) => end === model.numLayers);
  const wordEmbedding = held.find((p) => p.kind === 'vocab');
  const tiedCopyParams = holdsHead && !holdsEmbedding && wordEmbedding !== undefined ? wordEmbedding.numel : 0;
  // The builders' own bound (the validator checks every built schedule against it), not a second formula.
  const unitsInFlight = activationLimit(schedule, grid.pipeline, pp, input.numMicroBatches, input.numChunks);
  const activations = stageActivationBytes({
    model,
    microBatchSize,
    seqLen: input.seqLen,
    tp: grid.tensor,
    layersPerChunk: Math.max(...layers.map(([s, e]) => e - s)),
    unitsInFlight,
    headMicroBatchesInFlight: schedule === 'gpipe' ? input.numMicroBatches : 1,
    holdsEmbedding,
    holdsHead,
  });
  const bytes: MemoryBytes = {
    params: params * BYTES_PER_FLOAT32,
    grads: params * BYTES_PER_FLOAT32,
    optimizer: params * OPTIMIZER_BYTES_PER_PARAM,
    activations,
  };
  const totalBytes = bytes.params + bytes.grads + bytes.optimizer + bytes.activations;
  return { layers, params, tiedCopyParams, replicatedParams, microBatchesInFlight: unitsInFlight, bytes, totalBytes };
}

/**
 * Implements: the layer ranges each pipeline rank of a run holds, from the run's `partition` choice.
 * Every rank, the planner and the checkpoint tools call this one function so they agree on the split.
 */
import type { TrainConfig } from '../config/types.ts';
import { partitionBalanced } from './partition-balanced.ts';
import { partitionUniform, type LayerRange } from './partition.ts';
import { partCosts } from './stage-cost.ts';
import { placeLayerRanges, placementOf } from '../scheduler/placement.ts';
import type { ScheduleKind } from '../scheduler/ops.ts';

export type PartitionInput = Pick<TrainConfig, 'model' | 'numChunks' | 'partition' | 'seqLen' | 'batchSize' | 'numMicroBatches'> & {
  parallel: Pick<TrainConfig['parallel'], 'pipeline'>;
  /** Decides which stage holds which part (placement.ts); omitted: the looped placement. */
  schedule?: ScheduleKind;
};

/** For each pipeline rank, its [start, end) layer ranges, one per model chunk. */
export function partitionForRun(config: PartitionInput): LayerRange[][] {
  const placement = config.schedule === undefined ? 'looped' : placementOf(config.schedule);
  return placeLayerRanges(loopedPartition(config), placement);
}

/** The cut of the model, in the looped order the partitioners speak (chunk c of rank r is virtual stage c P + r). */
function loopedPartition(config: PartitionInput): LayerRange[][] {
  const { model, numChunks } = config;
  const pipeline = config.parallel.pipeline;
  if (config.partition === 'uniform' || pipeline === 1) return partitionUniform(model.numLayers, pipeline, numChunks);
  const costs = partCosts({
    model,
    seqLen: config.seqLen,
    microBatchSize: config.batchSize / config.numMicroBatches,
    numMicroBatches: config.numMicroBatches,
  });
  return partitionBalanced(model.numLayers, pipeline, numChunks, costs);
}

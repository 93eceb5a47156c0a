/**
 * Implements: the layer ranges each pipeline rank of a run holds, from the run's `partition` choice.
 * Every rank, the planner and the checkpoint tools call this one function so they agree on the split.
 */
import type { TrainConfig } from '../config/types.ts';
import { partitionBalanced } from './partition-balanced.ts';
import { partitionUniform, type LayerRange } from './partition.ts';
import { partCosts } from './stage-cost.ts';

export type PartitionInput = Pick<TrainConfig, 'model' | 'numChunks' | 'partition' | 'seqLen' | 'batchSize' | 'numMicroBatches'> & {
  parallel: Pick<TrainConfig['parallel'], 'pipeline'>;
};

/** For each pipeline rank, its [start, end) layer ranges, one per model chunk. */
export function partitionForRun(config: PartitionInput): LayerRange[][] {
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

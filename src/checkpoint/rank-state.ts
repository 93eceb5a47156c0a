/**
 * Implements: the glue between a rank's parameter table (paramsForRank in src/model/sharding.ts) and a
 * checkpoint: which tensors a rank saves under which global names, and which regions it reads back on
 * resume, in the same layout or another. No tfjs here: callers pass values as Float32Arrays (dataSync of
 * the variables), so this file stays testable without a backend.
 */
import type { ShardedParam } from '../model/sharding.ts';
import type { Checkpoint, RankTensor } from './checkpoint.ts';
import { firstMomentName, secondMomentName } from './checkpoint.ts';
import { CheckpointError } from './errors.ts';
import type { DataLoaderPosition } from './manifest.ts';
import { checkpointHolds, optimizerStepOf, readRegion } from './reshard.ts';

/** A rank's parameter values and Adam moments, by parameter name, as plain arrays. */
export interface RankState {
  params: Map<string, Float32Array>;
  /** Empty before the first optimizer step (AdamOptimizer creates moments lazily). */
  moments: Map<string, { m: Float32Array; v: Float32Array }>;
  /** AdamOptimizer.stepCount. */
  optimizerStep: number;
}

/** The tensors writeRankShard takes for a rank holding `held`: each parameter and, once they exist, its moments. */
export function rankTensorsToSave(held: readonly ShardedParam[], state: RankState): Map<string, RankTensor> {
  const tensors = new Map<string, RankTensor>();
  for (const { spec, region } of held) {
    const values = state.params.get(spec.name);
    if (values === undefined) throw new CheckpointError('invalid-argument', 'checkpoint', `no values for parameter ${spec.name}, which this rank holds`);
    tensors.set(spec.name, { values, region, fullShape: spec.shape });
    const moments = state.moments.get(spec.name);
    if (moments === undefined) {
      if (state.optimizerStep > 0) throw new CheckpointError('invalid-argument', 'checkpoint', `no Adam moments for ${spec.name} after ${state.optimizerStep} optimizer steps`);
      continue;
    }
    tensors.set(firstMomentName(spec.name), { values: moments.m, region, fullShape: spec.shape });
    tensors.set(secondMomentName(spec.name), { values: moments.v, region, fullShape: spec.shape });
  }
  return tensors;
}

/**
 * The state of a rank holding `held` (in ANY layout) from a checkpoint: each region assembled from the rank
 * files that overlap it. The arrays may be views into the checkpoint's files: upload them (tf.tensor copies)
 * before calling checkpoint.close().
 */
export async function loadRankState(checkpoint: Checkpoint, held: readonly ShardedParam[]): Promise<RankState> {
  const optimizerStep = optimizerStepOf(checkpoint.manifest, checkpoint.dir);
  const params = await readParams(checkpoint, held);
  const moments = new Map<string, { m: Float32Array; v: Float32Array }>();
  for (const { spec, region } of held) {
    if (!checkpointHolds(checkpoint.manifest, firstMomentName(spec.name))) {
      if (optimizerStep > 0) throw new CheckpointError('layout', checkpoint.dir, `no Adam moments for ${spec.name} after ${optimizerStep} optimizer steps`);
      continue;
    }
    moments.set(spec.name, {
      m: await readRegion(checkpoint, { name: firstMomentName(spec.name), fullShape: spec.shape, region }),
      v: await readRegion(checkpoint, { name: secondMomentName(spec.name), fullShape: spec.shape, region }),
    });
  }
  return { params, moments, optimizerStep };
}

/** The parameters alone of loadRankState (what generation and export read: no Adam moments). */
export async function readParams(checkpoint: Checkpoint, held: readonly ShardedParam[]): Promise<Map<string, Float32Array>> {
  const params = new Map<string, Float32Array>();
  for (const { spec, region } of held) params.set(spec.name, await readRegion(checkpoint, { name: spec.name, fullShape: spec.shape, region }));
  return params;
}

/** The data-loader position after `completedSteps` optimizer steps, for a sampler of `stepsPerEpoch`. */
export function dataLoaderPosition(completedSteps: number, stepsPerEpoch: number): DataLoaderPosition {
  return { nextStep: completedSteps, epoch: Math.floor(completedSteps / stepsPerEpoch), stepInEpoch: completedSteps % stepsPerEpoch };
}

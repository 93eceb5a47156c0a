/**
 * Implements: checkpoints of a process that holds whole model slices (the single-process trainer today;
 * the same calls per rank serve the workers): saving parameters and Adam moments as one rank file of a
 * step directory with its manifest, and restoring them, with the data position, from a checkpoint of
 * any layout (src/checkpoint/ reshards by global name and region).
 */
import {
  beginCheckpoint,
  commitCheckpoint,
  loadCheckpoint,
  resolveCheckpoint,
  writeRankShard,
  type CheckpointManifest,
  type JsonValue,
} from '../checkpoint/index.ts';
import { dataLoaderPosition, loadRankState, rankTensorsToSave } from '../checkpoint/rank-state.ts';
import type { TrainConfig } from '../config/types.ts';
import type { GPT } from '../model/gpt.ts';
import { paramsForRank } from '../model/sharding.ts';
import * as tf from '../tf.ts';
import type { AdamOptimizer } from './optimizer.ts';

export interface CheckpointTarget {
  /** Folder holding step-NNNNNN/ directories and the `latest` pointer. */
  root: string;
  keep: number;
}

function heldBy(config: TrainConfig, model: GPT) {
  return paramsForRank(config.model, { layerRanges: [[model.slice.startLayer, model.slice.endLayer]], tp: 1, tpRank: 0 });
}

/** Saves the state after `completedSteps` optimizer steps; returns the checkpoint directory. */
export async function saveCheckpoint(
  target: CheckpointTarget,
  completedSteps: number,
  stepsPerEpoch: number,
  config: TrainConfig,
  model: GPT,
  optimizer: AdamOptimizer,
): Promise<string> {
  const params = new Map<string, Float32Array>();
  for (const [name, variable] of model.params) params.set(name, (variable.dataSync() as Float32Array).slice());
  const moments = new Map<string, { m: Float32Array; v: Float32Array }>();
  for (const [name, { m, v }] of optimizer.state().moments) {
    moments.set(name, { m: (m.dataSync() as Float32Array).slice(), v: (v.dataSync() as Float32Array).slice() });
  }
  const tensors = rankTensorsToSave(heldBy(config, model), { params, moments, optimizerStep: optimizer.stepCount });
  const temporary = await beginCheckpoint(target.root, completedSteps);
  const record = await writeRankShard(temporary, 0, tensors, { step: completedSteps, optimizerStep: optimizer.stepCount });
  const { dir } = await commitCheckpoint(
    target.root,
    completedSteps,
    temporary,
    {
      layout: { data: config.parallel.data, pipeline: config.parallel.pipeline, tensor: config.parallel.tensor.size, order: 'tp-dp-pp', world: 1 },
      seed: config.seed,
      dataLoader: dataLoaderPosition(completedSteps, stepsPerEpoch),
      rng: { kind: 'counter', seed: config.seed },
      config: JSON.parse(JSON.stringify(config)) as JsonValue,
      ranks: [record],
    },
    { keep: target.keep },
  );
  return dir;
}

/**
 * Loads `pathOrRunDir` (a checkpoint, or a run folder meaning its latest) into the model and optimizer;
 * returns the step to continue from and the manifest.
 */
export async function restoreCheckpoint(
  pathOrRunDir: string,
  config: TrainConfig,
  model: GPT,
  optimizer: AdamOptimizer,
): Promise<{ nextStep: number; dir: string; manifest: CheckpointManifest }> {
  const dir = await resolveCheckpoint(pathOrRunDir);
  const checkpoint = await loadCheckpoint(dir, { verify: true });
  try {
    const state = await loadRankState(checkpoint, heldBy(config, model));
    for (const [name, values] of state.params) {
      const variable = model.param(name);
      tf.tidy(() => variable.assign(tf.tensor(values, variable.shape, 'float32')));
    }
    optimizer.loadState(state.optimizerStep, state.moments, model.params);
    return { nextStep: checkpoint.manifest.dataLoader.nextStep, dir, manifest: checkpoint.manifest };
  } finally {
    checkpoint.close();
  }
}

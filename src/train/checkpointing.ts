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
  readManifest,
  resolveCheckpoint,
  writeRankShard,
  type RankFileRecord,
} from '../checkpoint/index.ts';
import { mkdir } from 'node:fs/promises';
import { manifestParts } from '../checkpoint/manifest-parts.ts';
import { checkModelFits } from '../checkpoint/model-fit.ts';
import { runIdOf } from '../checkpoint/run-id.ts';
import { loadRankState, rankTensorsToSave } from '../checkpoint/rank-state.ts';
import type { TrainConfig } from '../config/types.ts';
import type { GPT } from '../model/gpt.ts';
import { paramsForRank, type ShardedParam } from '../model/sharding.ts';
import * as tf from '../tf.ts';
import { readTensorCopy } from '../backend/tensor-view.ts';
import type { AdamOptimizer } from './optimizer.ts';

export interface CheckpointTarget {
  /** Folder holding step-NNNNNN/ directories and the `latest` pointer. */
  root: string;
  keep: number;
  /** The run the checkpoints belong to (run-id.ts). */
  runId?: string;
}

function heldBy(config: TrainConfig, model: GPT) {
  return paramsForRank(config.model, { layerRanges: [[model.slice.startLayer, model.slice.endLayer]], tp: 1, tpRank: 0 });
}

/**
 * Writes one rank's shard (parameters it holds and their Adam moments) into a checkpoint's temporary
 * folder; returns the record the manifest lists it by.
 */
export async function writeShard(
  folder: string,
  rank: number,
  completedSteps: number,
  held: ShardedParam[],
  params: Map<string, tf.Variable>,
  optimizer: AdamOptimizer,
): Promise<RankFileRecord> {
  const values = new Map<string, Float32Array>();
  for (const [name, variable] of params) values.set(name, await readTensorCopy(variable));
  const moments = new Map<string, { m: Float32Array; v: Float32Array }>();
  for (const [name, { m, v }] of optimizer.state().moments) {
    moments.set(name, { m: await readTensorCopy(m), v: await readTensorCopy(v) });
  }
  const tensors = rankTensorsToSave(held, { params: values, moments, optimizerStep: optimizer.stepCount });
  await mkdir(folder, { recursive: true });
  return writeRankShard(folder, rank, tensors, { step: completedSteps, optimizerStep: optimizer.stepCount });
}

/** Loads the regions `held` of an (already resolved) checkpoint into `params` and the optimizer; returns the next step. */
export async function restoreShard(dir: string, held: ShardedParam[], params: Map<string, tf.Variable>, optimizer: AdamOptimizer, verify: boolean): Promise<number> {
  const checkpoint = await loadCheckpoint(dir, { verify });
  try {
    const state = await loadRankState(checkpoint, held);
    for (const [name, values] of state.params) {
      const variable = params.get(name);
      if (variable === undefined) throw new Error(`checkpoint ${dir} restores ${name}, which this rank does not hold`);
      tf.tidy(() => variable.assign(tf.tensor(values, variable.shape, 'float32')));
    }
    optimizer.loadState(state.optimizerStep, state.moments, params);
    return checkpoint.manifest.dataLoader.nextStep;
  } finally {
    checkpoint.close();
  }
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
  const temporary = await beginCheckpoint(target.root, completedSteps);
  const record = await writeShard(temporary, 0, completedSteps, heldBy(config, model), model.params, optimizer);
  const { dir } = await commitCheckpoint(target.root, completedSteps, temporary, manifestParts(config, 1, completedSteps, stepsPerEpoch, [record], target.runId), { keep: target.keep });
  return dir;
}

/**
 * Loads `pathOrRunDir` (a checkpoint, or a run folder meaning its latest) into the model and optimizer;
 * returns the step to continue from and the checkpoint folder.
 */
export async function restoreCheckpoint(
  pathOrRunDir: string,
  config: TrainConfig,
  model: GPT,
  optimizer: AdamOptimizer,
): Promise<{ nextStep: number; dir: string; runId: string | undefined }> {
  const dir = await resolveCheckpoint(pathOrRunDir);
  const manifest = await readManifest(dir);
  checkModelFits(manifest, config.model, dir);
  const nextStep = await restoreShard(dir, heldBy(config, model), model.params, optimizer, true);
  return { nextStep, dir, runId: runIdOf(manifest) };
}

/** Refuses a resume with nothing left to run (one process or many alike), saying how to go on. */
export function checkStepsLeft(startStep: number, totalSteps: number): void {
  if (startStep >= totalSteps) throw new Error(`the checkpoint is at step ${startStep}, not before the last step ${totalSteps}: pass --steps N with N > ${startStep}`);
}

/**
 * Implements: the whole model of a checkpoint of any layout, for generation: its config from the
 * manifest, and every parameter reassembled by global name from the rank files that hold its pieces
 * (the same region reads a resume in another layout uses; Adam's moments are not read).
 */
import * as tf from '../tf.ts';
import type { BackendName } from '../backend/names.ts';
import { initBackend } from '../backend/select.ts';
import { loadCheckpoint, readParams, resolveCheckpoint } from '../checkpoint/index.ts';
import { resolveConfig } from '../config/resolve.ts';
import type { TrainConfig } from '../config/types.ts';
import { GPT } from '../model/gpt.ts';
import { fullModelSlice } from '../model/params.ts';
import { wholeModelParams } from '../model/sharding.ts';

export interface LoadedModel {
  model: GPT;
  config: TrainConfig;
  /** The checkpoint folder. */
  dir: string;
  /** Optimizer steps the checkpoint was taken after. */
  step: number;
}

/** A checkpoint folder, or a run folder meaning its latest checkpoint; verified before use. */
export async function loadModelFromCheckpoint(path: string): Promise<LoadedModel> {
  const dir = await resolveCheckpoint(path);
  const checkpoint = await loadCheckpoint(dir, { verify: true });
  try {
    const config = resolveConfig(checkpoint.manifest.config, { checkDataFile: false });
    const model = new GPT(config.model, fullModelSlice(config.model), config.seed);
    try {
      for (const [name, values] of await readParams(checkpoint, wholeModelParams(config.model))) {
        const variable = model.param(name);
        tf.tidy(() => variable.assign(tf.tensor(values, variable.shape, 'float32')));
      }
    } catch (error) {
      model.dispose();
      throw error;
    }
    return { model, config, dir, step: checkpoint.manifest.dataLoader.nextStep };
  } finally {
    checkpoint.close();
  }
}

/**
 * What the `generate` and `eval` commands share: the backend (the one asked for, else the fastest
 * installed: chosen before the checkpoint's config is known), the whole model of `source` for `use`,
 * and its tensors freed after.
 */
export async function withCheckpointModel<T>(source: string, backend: BackendName | undefined, log: (line: string) => void, use: (loaded: LoadedModel) => Promise<T>): Promise<T> {
  tf.enableProdMode();
  await initBackend(backend, log);
  const loaded = await loadModelFromCheckpoint(source);
  try {
    return await use(loaded);
  } finally {
    loaded.model.dispose();
  }
}

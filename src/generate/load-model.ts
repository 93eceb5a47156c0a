/**
 * Implements: the whole model of a checkpoint of any layout, for generation: its config from the
 * manifest, and every parameter reassembled by global name from the rank files that hold its pieces
 * (the same region reads a resume in another layout uses; Adam's moments are not read).
 */
import * as tf from '../tf.ts';
import { loadCheckpoint, readRegion, resolveCheckpoint } from '../checkpoint/index.ts';
import { resolveConfig } from '../config/resolve.ts';
import type { TrainConfig } from '../config/types.ts';
import { GPT } from '../model/gpt.ts';
import { fullModelSlice } from '../model/params.ts';
import { paramsForRank } from '../model/sharding.ts';

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
      for (const { spec, region } of paramsForRank(config.model, { layerRanges: [[0, config.model.numLayers]], tp: 1, tpRank: 0 })) {
        const values = await readRegion(checkpoint, { name: spec.name, fullShape: spec.shape, region });
        const variable = model.param(spec.name);
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

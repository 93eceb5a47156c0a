/**
 * Implements: what the bench's own training processes (data-parallel ranks, the memory run) set up
 * before a Trainer, as `gpt-hybrid train` does: the config file with overrides, the backend, the
 * tokenized data and the model.
 */
import { initBackend } from '../src/backend/select.ts';
import type { TrainConfig } from '../src/config/types.ts';
import { loadConfig } from '../src/config/load.ts';
import { loadWebtextDataset, type TokenizedDataset } from '../src/dataset/webtext.ts';
import { GPT } from '../src/model/gpt.ts';
import { fullModelSlice } from '../src/model/params.ts';
import * as tf from '../src/tf.ts';

export async function setUpTraining(configPath: string, sets: readonly string[] = []): Promise<{ config: TrainConfig; dataset: TokenizedDataset; model: GPT }> {
  const config = loadConfig(configPath, sets);
  tf.enableProdMode();
  await initBackend(config.backend, () => {});
  const dataset = await loadWebtextDataset(config.data.path, { seqLen: config.seqLen, skipBadLines: config.data.skipBadLines, log: () => {} });
  const model = new GPT(config.model, fullModelSlice(config.model), config.seed);
  return { config, dataset, model };
}

/** Test helper: a resolved training config for a tiny model, with the vocabulary shrunk past validation. */
import { resolveConfig } from '../../src/config/resolve.ts';
import type { TrainConfig } from '../../src/config/types.ts';

export interface TinyDefaults {
  model: Record<string, unknown>;
  seqLen: number;
  steps: number;
  seed: number;
  vocabSize: number;
}

export function resolveTinyConfig(defaults: TinyDefaults, overrides: Record<string, unknown> = {}): TrainConfig {
  const resolved = resolveConfig(
    {
      model: defaults.model,
      batchSize: 4,
      seqLen: defaults.seqLen,
      steps: defaults.steps,
      optimizer: { lr: 1e-2 },
      data: { path: 'unused.jsonl' },
      seed: defaults.seed,
      ...overrides,
    },
    { checkDataFile: false },
  );
  // The config layer insists on the GPT-2 vocabulary; these tests need no tokenizer.
  return { ...resolved, model: { ...resolved.model, vocabSize: defaults.vocabSize } };
}

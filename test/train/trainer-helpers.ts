/** Test helpers: a tiny model config, a learnable token pattern and an in-process data-parallel all-reduce. */
import type { TrainConfig } from '../../src/config/types.ts';
import type { TokenizedDataset } from '../../src/dataset/webtext.ts';
import { resolveTinyConfig } from '../support/tiny-train-config.ts';

export const SEQ_LEN = 8;
export const VOCAB = 23;

/** Samples that repeat a short pattern, so a tiny model can learn them within a few steps. */
export function patternDataset(numSamples: number, vocab = VOCAB): TokenizedDataset {
  const inputIds = new Int32Array(numSamples * SEQ_LEN);
  for (let s = 0; s < numSamples; s++) {
    for (let t = 0; t < SEQ_LEN; t++) inputIds[s * SEQ_LEN + t] = (s + t * 3) % vocab;
  }
  return { inputIds, attentionMask: new Uint8Array(inputIds.length).fill(1), numSamples, seqLen: SEQ_LEN };
}

export function tinyTrainConfig(overrides: Record<string, unknown> = {}): TrainConfig {
  const model = { numLayers: 2, hiddenSize: 16, numAttentionHeads: 2, vocabSize: 50304, maxPositionEmbeddings: 16 };
  return resolveTinyConfig({ model, seqLen: SEQ_LEN, steps: 6, seed: 3, vocabSize: VOCAB }, overrides);
}

/** A sum all-reduce between trainers in this process: resolves once every rank has contributed. */
export function inProcessAllReduce(size: number) {
  let pending: { values: Float32Array; resolve: (sum: Float32Array) => void }[] = [];
  return (rank: number) => (values: Float32Array) =>
    new Promise<Float32Array>((resolve) => {
      pending[rank] = { values, resolve };
      if (Object.keys(pending).length < size) return;
      const sum = new Float32Array(values.length);
      for (const { values: v } of pending) for (let i = 0; i < v.length; i++) sum[i] += v[i];
      const waiting = pending;
      pending = [];
      for (const entry of waiting) entry.resolve(sum.slice());
    });
}

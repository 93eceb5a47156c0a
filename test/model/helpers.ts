/** Test helpers: tiny GPT configs and batches that run in milliseconds on any backend. */
import type { GPTConfig } from '../../src/model/config.ts';
import { MODEL_DEFAULTS } from '../../src/model/config.ts';
import type { TokenBatch } from '../../src/model/gpt.ts';

export function tinyConfig(overrides: Partial<GPTConfig> = {}): GPTConfig {
  return {
    ...MODEL_DEFAULTS,
    numLayers: 2,
    hiddenSize: 16,
    numAttentionHeads: 2,
    vocabSize: 37,
    maxPositionEmbeddings: 16,
    ...overrides,
  };
}

/** A batch with pseudo-random ids and, when `padFrom` is given, padding from that position on. */
export function tinyBatch(config: GPTConfig, batch: number, seqLen: number, padFrom?: number): TokenBatch {
  const inputIds = new Int32Array(batch * seqLen);
  const attentionMask = new Uint8Array(batch * seqLen);
  for (let i = 0; i < inputIds.length; i++) {
    const position = i % seqLen;
    const padded = padFrom !== undefined && position >= padFrom;
    inputIds[i] = padded ? config.vocabSize - 1 : (i * 7919 + 13) % config.vocabSize;
    attentionMask[i] = padded ? 0 : 1;
  }
  return { inputIds, attentionMask, batch, seqLen, sampleIds: Int32Array.from({ length: batch }, (_, b) => 100 + b) };
}

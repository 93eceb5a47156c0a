/**
 * Implements: the whole model's parameter count by Megatron's formula (Narayanan et al. 2021, "Efficient
 * Large-Scale Language Model Training on GPU Clusters", section 5.1):
 *
 *   P = 12·l·h²·(1 + 13/(12h) + (V + s)/(12·l·h))  =  l·(12h² + 13h) + (V + s)·h
 *
 * Per block: QKV 3h² + 3h, projection h² + h, fc1 4h² + 4h, fc2 4h² + h, two LayerNorms 4h; then the
 * word (V·h) and position (s·h) embeddings, s being maxPositionEmbeddings. The LM head adds nothing: it
 * is the word embedding (tied) and, as in GPT-2, has no bias.
 *
 * Our parameter table (model/params.ts) holds exactly 2h more: the final LayerNorm's gamma and beta,
 * which the formula leaves out. For the gpt3 preset that is 24,576 of ~174.6 billion.
 *
 * The formula assumes an MLP four times the hidden size; for another mlpRatio r the same terms give
 * l·((4 + 2r)·h² + (9 + r)·h) + (V + s)·h, which is what megatronParameterCount computes (identical
 * for r = 4).
 */
import type { GPTConfig } from '../model/config.ts';

export function megatronParameterCount(config: GPTConfig): number {
  const { numLayers: l, hiddenSize: h, mlpRatio: r, vocabSize: v, maxPositionEmbeddings: s } = config;
  return l * ((4 + 2 * r) * h * h + (9 + r) * h) + (v + s) * h;
}

/** What the parameter table counts beyond the formula: the final LayerNorm. */
export function finalNormParameterCount(config: GPTConfig): number {
  return 2 * config.hiddenSize;
}

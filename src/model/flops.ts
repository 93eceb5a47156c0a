/**
 * Implements: model FLOPs per training step, the numerator of model FLOP utilization.
 *
 * Megatron-LM (Narayanan et al., 2021, eq. 3) counts 72·B·s·l·h²·(1 + s/(6h) + V/(16·l·h)) model
 * FLOPs per iteration for mlpRatio 4 (the 96 of the paper includes activation recomputation, which is
 * not model work). We count the same terms from the architecture so any mlpRatio is right: per token
 * and layer, the four weight matrices ((4 + 2·mlpRatio)·h² multiply-adds) and the two attention
 * matmuls over the full s×s score matrix (2·s·h); per token, the LM head (h·V). A multiply-add is
 * 2 FLOPs and backward costs twice the forward, hence the factor 3·2.
 */
import type { GPTConfig } from './config.ts';

export function modelFlopsPerToken(config: GPTConfig, seqLen: number): number {
  const multiplyAdds = config.numLayers * blockMultiplyAddsPerToken(config, seqLen) + headMultiplyAddsPerToken(config);
  return 3 * 2 * multiplyAdds;
}

/** One block's forward multiply-adds per token: its four weight matrices and the two attention matmuls. */
export function blockMultiplyAddsPerToken(config: GPTConfig, seqLen: number): number {
  const h = config.hiddenSize;
  return (4 + 2 * config.mlpRatio) * h * h + 2 * seqLen * h;
}

/** The LM head's forward multiply-adds per token. */
export function headMultiplyAddsPerToken(config: GPTConfig): number {
  return config.hiddenSize * config.vocabSize;
}

export function modelFlopsPerStep(config: GPTConfig, seqLen: number, tokensPerStep: number): number {
  return modelFlopsPerToken(config, seqLen) * tokensPerStep;
}

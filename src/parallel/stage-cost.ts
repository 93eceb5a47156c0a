/**
 * Implements: a deterministic cost model of one micro-batch's forward and backward through each part of
 * the GPT (the embedding, one transformer block, the final norm with the LM head and the loss), in
 * units of one matmul FLOP, for balancing pipeline stages.
 *
 * Why a model and not a measurement: every rank must compute the same partition without talking, and
 * a resumed run must get the same one; timings differ per process and per run, formulas do not.
 *
 * Why more than FLOPs: on the wasm backend an element-wise op costs far more per element than a
 * matmul FLOP (they are memory-bound and single-pass), so at the small widths this machine trains,
 * softmaxes over the vocabulary and attention scores, GELU, LayerNorm and Adam's update take a large
 * share of the time. Measured on the 2-core machine (wasm, 2026-11): Adam's update of a 50304 x 64
 * weight (about 14 element-wise ops per element) took as long as 476 matmul FLOPs per element, so one
 * element-wise op counts as ~32 FLOPs here. Element-wise counts below are per element touched, forward
 * and backward together, rounded; only the ratios between parts matter.
 */
import type { GPTConfig } from '../model/config.ts';
import { countSliceParameters } from '../model/params.ts';
import { blockMultiplyAddsPerToken, headMultiplyAddsPerToken } from '../model/flops.ts';

/** Matmul FLOPs one element-wise op per element costs on the wasm backend (see above). */
export const ELEMENTWISE_WEIGHT = 32;
/** Adam/AdamW: moments, bias correction, square root, division and the update. */
const OPTIMIZER_OPS_PER_PARAMETER = 14;
/** Backward takes about twice the forward's work for matmuls and element-wise ops alike. */
const FORWARD_AND_BACKWARD = 3;

export interface StageCostShape {
  model: GPTConfig;
  seqLen: number;
  /** Samples per micro-batch. */
  microBatchSize: number;
  /** Micro-batches per optimizer step: the parameter update is spread over them. */
  numMicroBatches: number;
}

export interface PartCosts {
  /** Word and position embeddings on the first stage. */
  embedding: number;
  /** One transformer block (every block costs the same). */
  layer: number;
  /** Final LayerNorm, the tied LM head and the cross-entropy on the last stage. */
  head: number;
}

export function partCosts(shape: StageCostShape): PartCosts {
  const { model, seqLen, microBatchSize, numMicroBatches } = shape;
  const tokens = seqLen * microBatchSize;
  const h = model.hiddenSize;
  const ffn = Math.round(h * model.mlpRatio);
  const heads = model.numAttentionHeads;
  const vocab = model.vocabSize;
  const update = (parameters: number): number => (OPTIMIZER_OPS_PER_PARAMETER * ELEMENTWISE_WEIGHT * parameters) / numMicroBatches;

  // Parameter counts from the model's own table: one block, the final norm with the tied head, the embeddings.
  const parameters = (endLayer: number, hasEmbedding: boolean, hasHead: boolean): number =>
    countSliceParameters(model, { startLayer: 0, endLayer, hasEmbedding, hasHead });

  // A multiply-add is two FLOPs.
  const layerMatmul = 2 * blockMultiplyAddsPerToken(model, seqLen);
  // Two LayerNorms, biases and residuals, GELU over the MLP width, softmax/mask/scale over the scores.
  const layerElementwise = 23 * h + 9 * ffn + 5 * heads * seqLen;
  const layerParameters = parameters(1, false, false);
  const layer = FORWARD_AND_BACKWARD * tokens * (layerMatmul + ELEMENTWISE_WEIGHT * layerElementwise) + update(layerParameters);

  const headMatmul = 2 * headMultiplyAddsPerToken(model);
  // Softmax, log and the one-hot difference over the vocabulary, and the final LayerNorm.
  const headElementwise = 5 * vocab + 8 * h;
  const head = FORWARD_AND_BACKWARD * tokens * (headMatmul + ELEMENTWISE_WEIGHT * headElementwise) + update(parameters(0, false, true));

  // The gather and its scatter-add backward, which also clears a dense vocab x hidden gradient.
  const embeddingElementwise = FORWARD_AND_BACKWARD * tokens * 2 * h + vocab * h;
  const embedding = ELEMENTWISE_WEIGHT * embeddingElementwise + update(parameters(0, true, false));

  return { embedding, layer, head };
}

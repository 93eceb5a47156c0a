/**
 * Implements: the planner's memory model: bytes per parameter held (weights, gradients, Adam state) and
 * an estimate of the activations one pipeline stage keeps for the backward pass.
 *
 * Everything is float32 (tfjs computes in float32; fp16 "naive" mode only halves what crosses the wire).
 * Per parameter element: the weight 4 B, its gradient 4 B, Adam's two moments 8 B.
 *
 * Activations: Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer
 * Models", section 4.1) count what a transformer block saves for its backward, at 16 bits and with
 * 1-byte dropout masks: 34·s·b·h + 5·a·s²·b bytes per layer without tensor parallelism, and
 * s·b·h·(10 + 24/t + 5·a·s/(h·t)) over t ranks. We count the same tensors of OUR block, in float32
 * elements (4 B each; our dropout masks are float32 too), for N = b·s tokens of one micro-batch:
 *   replicated on every tp rank:
 *     the inputs and outputs of both LayerNorms (ln1 in, QKV input, ln2 in, fc1 input)   4·N·h
 *     the dropout masks after attention and after the MLP, when dropRate > 0            2·N·h
 *   split over the t ranks (each holds its heads / MLP columns):
 *     Q, K, V                                                                           3·N·h / t
 *     the attention probabilities (softmax output), a heads of s×s per sample           a·s·N / t
 *     their dropout mask and the dropped probabilities, when attnDropRate > 0           2·a·s·N / t
 *     the attention context (input of the output projection)                            N·h / t
 *     fc1's output (GELU input) and the GELU output, F = mlpRatio·h                     2·N·F / t
 * For mlpRatio 4 and no dropout that is 16·N·h + a·s·N elements: the paper's 34 + 5·a·s/h bytes per
 * token-hidden unit with the fp16 halves doubled to float32 and the 1-byte masks dropped.
 * With model.checkpoint, a block keeps only its input (N·h) and backward recomputes one block at a
 * time, so the stage adds one block's full set once.
 * The last stage also keeps the final LayerNorm's input and output (2·N·h) and the gradient of its
 * vocab-parallel logits (2·N·V / t: wasm's fused cross-entropy writes it in both orientations, so the
 * head's input and weight halves each read theirs, manual/head.ts); the first stage the embedding dropout mask
 * (N·h) when embedDropRate > 0.
 * Not counted: transient buffers (gradients of activations during backward, the all-reduce buffers),
 * the attention bias constant, and framework overhead. Backward by recompute of the stage forward (the
 * tape approach, see ARCHITECTURE.md) keeps less between forward and backward; the estimate is what a
 * stage keeping its forward activations (a hand-written backward) holds, an upper bound for that.
 */
import type { GPTConfig } from '../model/config.ts';

export const BYTES_PER_FLOAT32 = 4;
/** Adam (and AdamW) keep two float32 moments per parameter. */
export const OPTIMIZER_BYTES_PER_PARAM = 2 * BYTES_PER_FLOAT32;

export interface ActivationShape {
  model: GPTConfig;
  /** Samples in one micro-batch. */
  microBatchSize: number;
  seqLen: number;
  tp: number;
}

/** Float32 elements one block saves for backward, for one micro-batch on one tp rank (no checkpointing). */
export function blockActivationElements(shape: ActivationShape): number {
  const { model, microBatchSize, seqLen, tp } = shape;
  const tokens = microBatchSize * seqLen;
  const h = model.hiddenSize;
  const ffn = model.hiddenSize * model.mlpRatio;
  const scoresPerToken = model.numAttentionHeads * seqLen;
  const replicated = 4 * h + (model.dropRate > 0 ? 2 * h : 0);
  const split = 3 * h + scoresPerToken * (model.attnDropRate > 0 ? 3 : 1) + h + 2 * ffn;
  return tokens * (replicated + split / tp);
}

/** Float32 elements one block keeps between forward and backward under activation checkpointing: its input. */
export function checkpointedBlockElements(shape: ActivationShape): number {
  return shape.microBatchSize * shape.seqLen * shape.model.hiddenSize;
}

/** Extra elements on the stage holding the embedding: the embedding dropout mask, when there is one. */
export function embeddingActivationElements(shape: ActivationShape): number {
  return shape.model.embedDropRate > 0 ? shape.microBatchSize * shape.seqLen * shape.model.hiddenSize : 0;
}

/** Extra elements on the last stage: final LayerNorm input and output, the vocab-parallel logits' gradient in two orientations. */
export function headActivationElements(shape: ActivationShape): number {
  const tokens = shape.microBatchSize * shape.seqLen;
  return tokens * (2 * shape.model.hiddenSize + (2 * shape.model.vocabSize) / shape.tp);
}

export interface StageActivationInput extends ActivationShape {
  /** Layers in this rank's largest model chunk: an upper bound per chunk (chunks of a balanced partition differ). */
  layersPerChunk: number;
  /** (micro-batch, chunk) forwards whose backward has not run yet, at the peak. */
  unitsInFlight: number;
  /** Micro-batches in flight through the LM head at the peak (1 under 1F1B, all under GPipe). */
  headMicroBatchesInFlight: number;
  holdsEmbedding: boolean;
  holdsHead: boolean;
}

/** Peak bytes of activations kept by one rank (see the file comment for what is counted). */
export function stageActivationBytes(input: StageActivationInput): number {
  const checkpoint = input.model.checkpoint;
  const perLayer = checkpoint ? checkpointedBlockElements(input) : blockActivationElements(input);
  const perUnit = input.layersPerChunk * perLayer + (input.holdsEmbedding ? embeddingActivationElements(input) : 0);
  let elements = input.unitsInFlight * perUnit;
  if (checkpoint) elements += blockActivationElements(input);
  if (input.holdsHead) elements += input.headMicroBatchesInFlight * headActivationElements(input);
  return elements * BYTES_PER_FLOAT32;
}

/**
 * Implements: the names (and attribute types) of this project's own kernels, apart from any backend.
 *
 * Why a file of its own: model and train code dispatch these by name on every backend and fall back to
 * tf ops where none is registered, so they must not import a backend's implementation to learn a
 * name. The wasm implementations are in src/backend/wasm/ (adam.ts, gelu.ts, layer-norm.ts,
 * softmax-cross-entropy.ts, sum-of-squares.ts), the webgpu ones in src/backend/webgpu/; tfjs keeps its names apart the same way
 * (tfjs-core/src/kernel_names.ts).
 */

/** One Adam/AdamW step of a parameter from its gradient and both moments (wasm/adam.ts). */
export const ADAM_UPDATE = 'GptHybridAdamUpdate';
/** The same step with both moments in one tensor [2, ...shape], m then v (webgpu/adam.ts). */
export const ADAM_UPDATE_PACKED = 'GptHybridAdamUpdatePacked';

/** The scalars of one update; each is rounded to float32 as a tf scalar would be. */
export interface AdamUpdateAttrs {
  /** Gradient clipping factor (1: none). */
  clip: number;
  /** Adam's L2 weight decay added to the gradient (0 for AdamW). */
  l2: number;
  /** AdamW's decoupled decay factor 1 - lr * wd (1 for Adam). */
  decay: number;
  beta1: number;
  oneMinusBeta1: number;
  beta2: number;
  oneMinusBeta2: number;
  sqrtBiasCorrection2: number;
  eps: number;
  stepSize: number;
}

/** Column sums of a [rows, h] matrix, [h]: a linear's bias gradient (webgpu/column-sums.ts). */
export const COLUMN_SUMS = 'GptHybridColumnSums';

/** Attention's probabilities softmax(scores * scale + mask bias) and its scores' gradient (webgpu/). */
export const ATTENTION_SOFTMAX = 'GptHybridAttentionSoftmax';
export const SOFTMAX_GRAD = 'GptHybridSoftmaxGrad';

/** Attention's qkv split into heads and the heads' gradients merged back (webgpu/attention-heads.ts). */
export const SPLIT_HEADS = 'GptHybridSplitHeads';
export const MERGE_HEADS = 'GptHybridMergeHeads';

/** A linear's output with its bias added to the residual stream: x + (y + bias) (webgpu/bias-residual.ts). */
export const BIAS_RESIDUAL = 'GptHybridBiasResidual';

/** GELU (tanh form) and its backward (wasm/gelu.ts). */
export const GELU = 'GptHybridGelu';
export const GELU_GRAD = 'GptHybridGeluGrad';
/** GELU's y alone and a backward that recomputes the tanh (webgpu/gelu.ts, gelu-grad.ts). */
export const GELU_Y = 'GptHybridGeluY';
export const GELU_GRAD_RECOMPUTE = 'GptHybridGeluGradRecompute';

/** LayerNorm over the last axis and its backward (wasm/layer-norm.ts). */
export const LAYER_NORM = 'GptHybridLayerNorm';
export const LAYER_NORM_GRAD = 'GptHybridLayerNormGrad';
/** The backward with a residual gradient added to dx (webgpu/layer-norm-grad.ts). */
export const LAYER_NORM_GRAD_RESIDUAL = 'GptHybridLayerNormGradResidual';

/** The LM head's cross-entropy with its gradient, over transposed logits (wasm/softmax-cross-entropy.ts). */
export const SOFTMAX_CROSS_ENTROPY = 'GptHybridSoftmaxCrossEntropy';

/**
 * The same loss and gradient over logits as a matmul leaves them, [rows, V], returning losses [rows]
 * and dLogits [rows, V] (webgpu/softmax-cross-entropy.ts): the transposed layout is a wasm matmul trick.
 */
export const SOFTMAX_CROSS_ENTROPY_ROWS = 'GptHybridSoftmaxCrossEntropyRows';

/** Each tensor's float32 sum of squares, the global gradient norm's parts (wasm/sum-of-squares.ts). */
export const SUM_OF_SQUARES = 'GptHybridSumOfSquares';

/**
 * Implements: the forward-with-saved and analytic backward of the GPT's elementwise and row-wise pieces
 * (llm.c's layernorm/matmul/gelu forward-backward pairs), on 2-D row tensors [rows, features].
 * Each forward returns what its backward needs; no tape is involved, so the pair can straddle an await.
 * LayerNorm, GELU and the LM head's cross-entropy run as fused kernels where the backend has them
 * (src/backend/wasm/, src/backend/webgpu/), else as the tf ops written here, the same math.
 */
import * as tf from '../../tf.ts';
import {
  ATTENTION_SOFTMAX, BIAS_RESIDUAL, COLUMN_SUMS, GELU, GELU_GRAD, GELU_GRAD_RECOMPUTE, GELU_Y, LAYER_NORM, LAYER_NORM_GRAD, LAYER_NORM_GRAD_RESIDUAL, MERGE_HEADS,
  SOFTMAX_CROSS_ENTROPY, SOFTMAX_CROSS_ENTROPY_ROWS, SOFTMAX_GRAD, SPLIT_HEADS,
} from '../../backend/kernel-names.ts';
import type { Activation } from '../config.ts';
import { geluExact, pickLabels } from '../layers.ts';
import { tidyKeep } from './tidy.ts';

/** Whether the current backend has one of this project's fused kernels (src/backend/wasm/, webgpu/). */
function hasKernel(name: string): boolean {
  return tf.getKernel(name, tf.getBackend()) !== undefined;
}

export interface LayerNormSaved {
  /** (x - mean) * rstd, [rows, H]. */
  xhat: tf.Tensor2D;
  /** 1 / sqrt(var + eps), [rows, 1]. */
  rstd: tf.Tensor2D;
}

/** LayerNorm over the last axis of rows x [rows, H], the same moments + rsqrt form as layers.ts. */
export function layerNormForward(x: tf.Tensor2D, gamma: tf.Tensor, beta: tf.Tensor, epsilon: number): { y: tf.Tensor2D; saved: LayerNormSaved } {
  if (x.shape[1] % 4 === 0 && hasKernel(LAYER_NORM)) {
    // One pass per row instead of ~8 dispatches (backend/wasm/layer-norm.ts).
    const [y, xhat, rstd] = tf.engine().runKernel(LAYER_NORM, { x, gamma, beta }, { epsilon }) as tf.Tensor2D[];
    return { y: y!, saved: { xhat: xhat!, rstd: rstd! } };
  }
  const { mean, variance } = tf.moments(x, -1, true);
  const rstd = tf.rsqrt(tf.add(variance, epsilon)) as tf.Tensor2D;
  const xhat = tf.mul(tf.sub(x, mean), rstd) as tf.Tensor2D;
  const y = tf.add(tf.mul(xhat, gamma), beta) as tf.Tensor2D;
  return { y, saved: { xhat, rstd } };
}

/**
 * dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * gamma; dgamma = sum(dy * xhat),
 * dbeta = sum(dy) over rows. With `residual` (the gradient reaching the LayerNorm's input along the
 * residual stream), dx is residual + that.
 */
export function layerNormBackward(dy: tf.Tensor2D, saved: LayerNormSaved, gamma: tf.Tensor, residual?: tf.Tensor2D): { dx: tf.Tensor2D; dgamma: tf.Tensor1D; dbeta: tf.Tensor1D } {
  if (residual !== undefined && dy.shape[1] % 4 === 0 && hasKernel(LAYER_NORM_GRAD_RESIDUAL)) {
    // The residual add folded into the dx pass, a dispatch fewer (backend/webgpu/layer-norm-grad.ts).
    const [dx, dgamma, dbeta] = tf.engine().runKernel(LAYER_NORM_GRAD_RESIDUAL, { dy, xhat: saved.xhat, rstd: saved.rstd, gamma, residual }, {}) as tf.Tensor[];
    return { dx: dx as tf.Tensor2D, dgamma: dgamma as tf.Tensor1D, dbeta: dbeta as tf.Tensor1D };
  }
  const grads = layerNormGradients(dy, saved, gamma);
  return residual === undefined ? grads : { ...grads, dx: tf.add(residual, grads.dx) as tf.Tensor2D };
}

function layerNormGradients(dy: tf.Tensor2D, saved: LayerNormSaved, gamma: tf.Tensor): { dx: tf.Tensor2D; dgamma: tf.Tensor1D; dbeta: tf.Tensor1D } {
  const { xhat, rstd } = saved;
  if (dy.shape[1] % 4 === 0 && hasKernel(LAYER_NORM_GRAD)) {
    const [dx, dgamma, dbeta] = tf.engine().runKernel(LAYER_NORM_GRAD, { dy, xhat, rstd, gamma }, {}) as tf.Tensor[];
    return { dx: dx as tf.Tensor2D, dgamma: dgamma as tf.Tensor1D, dbeta: dbeta as tf.Tensor1D };
  }
  const dgamma = tf.sum(tf.mul(dy, xhat), 0) as tf.Tensor1D;
  const dbeta = tf.sum(dy, 0) as tf.Tensor1D;
  const g = tf.mul(dy, gamma);
  const meanG = tf.mean(g, -1, true);
  const meanGXhat = tf.mean(tf.mul(g, xhat), -1, true);
  const dx = tf.mul(tf.sub(tf.sub(g, meanG), tf.mul(xhat, meanGXhat)), rstd) as tf.Tensor2D;
  return { dx, dgamma, dbeta };
}

const GELU_C = Math.sqrt(2 / Math.PI);
const GELU_A = 0.044715;

export interface GeluSaved {
  /** The pre-activation. */
  x: tf.Tensor;
  /** The exact GELU (erf) rather than the tanh approximation. */
  exact?: boolean;
  /**
   * tanh(C (x + A x^3)), kept so the backward needs no second Tanh; absent where the backend's
   * backward recomputes it (webgpu: a dispatch fewer than writing it out).
   */
  tanh?: tf.Tensor;
}

/**
 * The model's GELU as layers.ts's `activate` computes it: the tanh approximation (with the backends'
 * fused kernels), or the exact one from tf ops (no fused kernel: the seed's presets alone use it).
 */
export function geluForward(x: tf.Tensor, activation: Activation = 'gelu_tanh'): { y: tf.Tensor; saved: GeluSaved } {
  if (activation === 'gelu') return { y: geluExact(x), saved: { x, exact: true } };
  if (hasKernel(GELU_Y) && hasKernel(GELU_GRAD_RECOMPUTE)) return { y: tf.engine().runKernel(GELU_Y, { x }, {}) as tf.Tensor, saved: { x } };
  if (hasKernel(GELU)) {
    // One pass instead of 9 dispatches (backend/wasm/gelu.ts).
    const [y, tanh] = tf.engine().runKernel(GELU, { x }, {}) as tf.Tensor[];
    return { y: y!, saved: { x, tanh: tanh! } };
  }
  const cube = tf.mul(tf.mul(x, x), x);
  const inner = tf.mul(tf.add(x, tf.mul(cube, GELU_A)), GELU_C);
  const tanh = tf.tanh(inner);
  const y = tf.mul(tf.mul(x, 0.5), tf.add(tanh, 1));
  return { y, saved: { x, tanh } };
}

/**
 * d gelu / dx = 0.5 (1 + t) + 0.5 x (1 - t^2) C (1 + 3 A x^2) for the tanh form; for the exact one,
 * Phi(x) + x phi(x) = 0.5 (1 + erf(x / sqrt 2)) + x exp(-x^2 / 2) / sqrt(2 pi).
 */
export function geluBackward(dy: tf.Tensor, saved: GeluSaved): tf.Tensor {
  const { x } = saved;
  if (saved.exact === true) {
    const cdf = tf.mul(tf.add(tf.erf(tf.mul(x, Math.SQRT1_2)), 1), 0.5);
    const pdf = tf.mul(tf.exp(tf.mul(tf.mul(x, x), -0.5)), 1 / Math.sqrt(2 * Math.PI));
    return tf.mul(dy, tf.add(cdf, tf.mul(x, pdf)));
  }
  if (saved.tanh === undefined && hasKernel(GELU_GRAD_RECOMPUTE)) return tf.engine().runKernel(GELU_GRAD_RECOMPUTE, { dy, x }, {}) as tf.Tensor;
  const tanh = saved.tanh ?? tf.tanh(tf.mul(tf.add(x, tf.mul(tf.mul(tf.mul(x, x), x), GELU_A)), GELU_C));
  if (hasKernel(GELU_GRAD)) return tf.engine().runKernel(GELU_GRAD, { dy, x, tanh }, {}) as tf.Tensor;
  const halfX = tf.mul(x, 0.5);
  const sech2 = tf.sub(1, tf.mul(tanh, tanh));
  const innerSlope = tf.add(tf.mul(tf.mul(x, x), 3 * GELU_A * GELU_C), GELU_C);
  const local = tf.add(tf.add(tf.mul(tanh, 0.5), 0.5), tf.mul(tf.mul(halfX, sech2), innerSlope));
  return tf.mul(dy, local);
}

/** x [rows, in] W [in, out] + b [out]. */
export function linear(x: tf.Tensor2D, weight: tf.Tensor2D, bias: tf.Tensor): tf.Tensor2D {
  // On webgpu the stock fused matmul adds the bias as the matmul's last step, the same float32 add, a
  // dispatch fewer. Elsewhere two ops, as before: cpu and wasm gain nothing from a fused matmul's
  // dispatch, and their results stay those of the tape model, which adds the bias apart.
  if (tf.getBackend() === 'webgpu') return tf.fused.matMul({ a: x, b: weight, bias }) as tf.Tensor2D;
  return tf.add(tf.matMul(x, weight), bias) as tf.Tensor2D;
}

/** x + (y + bias): a linear's output y [rows, h] with its bias [h], added to the residual stream x. */
export function addBiasToResidual(x: tf.Tensor2D, y: tf.Tensor2D, bias: tf.Tensor): tf.Tensor2D {
  // One dispatch instead of two (backend/webgpu/bias-residual.ts).
  if (hasKernel(BIAS_RESIDUAL)) return tf.engine().runKernel(BIAS_RESIDUAL, { x, y, bias }, {}) as tf.Tensor2D;
  return tf.add(x, tf.add(y, bias)) as tf.Tensor2D;
}

/** The sum over rows of x [rows, h], [h]: a linear's bias gradient from its output gradient. */
export function sumRows(x: tf.Tensor2D): tf.Tensor1D {
  // One dispatch where the reduction over rows would transpose first (backend/webgpu/column-sums.ts).
  if (hasKernel(COLUMN_SUMS)) return tf.engine().runKernel(COLUMN_SUMS, { x }, {}) as tf.Tensor1D;
  return tf.sum(x, 0);
}

/** qkv [B, T, heads, 3 headDim], each head's q|k|v -> q, k, v [B, heads, T, headDim]. */
export function splitHeads(qkv: tf.Tensor4D): [tf.Tensor4D, tf.Tensor4D, tf.Tensor4D] {
  // Three dispatches instead of six (backend/webgpu/attention-heads.ts).
  if (hasKernel(SPLIT_HEADS)) return tf.engine().runKernel(SPLIT_HEADS, { qkv }, {}) as [tf.Tensor4D, tf.Tensor4D, tf.Tensor4D];
  return tf.split(qkv, 3, 3).map((t) => tf.transpose(t, [0, 2, 1, 3])) as [tf.Tensor4D, tf.Tensor4D, tf.Tensor4D];
}

/** splitHeads' inverse for the gradients: dq, dk, dv [B, heads, T, headDim] -> [B, T, heads, 3 headDim]. */
export function mergeHeads(dq: tf.Tensor4D, dk: tf.Tensor4D, dv: tf.Tensor4D): tf.Tensor4D {
  if (hasKernel(MERGE_HEADS)) return tf.engine().runKernel(MERGE_HEADS, { dq, dk, dv }, {}) as tf.Tensor4D;
  // The split and the head transpose undone in one 4-D transpose.
  return tf.transpose(tf.concat([dq, dk, dv], 3), [0, 2, 1, 3]);
}

/** Attention's probabilities softmax(scores * scale + bias), bias [B or 1, 1, T, T] added to every head. */
export function attentionProbs(scores: tf.Tensor4D, bias: tf.Tensor4D, scale: number): tf.Tensor4D {
  // One pass per row instead of three dispatches (backend/webgpu/attention-softmax.ts).
  if (hasKernel(ATTENTION_SOFTMAX)) return tf.engine().runKernel(ATTENTION_SOFTMAX, { scores, bias }, { scale }) as tf.Tensor4D;
  return tf.softmax(tf.add(tf.mul(scores, scale), bias)) as tf.Tensor4D;
}

/** The scores' gradient from the probabilities' through attentionProbs: softmaxBackward times the scale. */
export function attentionScoresGrad(dprobs: tf.Tensor4D, probs: tf.Tensor4D, scale: number): tf.Tensor4D {
  // One pass per row instead of five dispatches (backend/webgpu/softmax-grad.ts).
  if (hasKernel(SOFTMAX_GRAD)) return tf.engine().runKernel(SOFTMAX_GRAD, { dprobs, probs }, { scale }) as tf.Tensor4D;
  return tf.mul(softmaxBackward(dprobs, probs), scale) as tf.Tensor4D;
}

/** Softmax over the last axis backward: dS = P * (dP - sum(dP * P)). */
export function softmaxBackward(dprobs: tf.Tensor, probs: tf.Tensor): tf.Tensor {
  const dot = tf.sum(tf.mul(dprobs, probs), -1, true);
  return tf.mul(probs, tf.sub(dprobs, dot));
}

/**
 * What the tied LM head's backward keeps from its loss: the logits' gradient and the head's input rows.
 * The halves take what they need: the input gradient reads `dLogits` (and frees it where the weight
 * gradient has its own transposed copy), the weight gradient frees the rest.
 */
export interface LmHeadSaved {
  /** Rows of the head's input before any padding. */
  rows: number;
  /** (softmax - onehot) * gradScale, [paddedRows, V]; undefined once the input gradient no longer needs it. */
  dLogits?: tf.Tensor2D;
  /** The same transposed, [V, paddedRows], where the backend's kernel writes it (wasm): dW's big operand on the left. */
  dLogitsT?: tf.Tensor2D;
  /** The head's input rows [paddedRows, H] (zero rows appended on wasm). */
  inputs: tf.Tensor2D;
}

/**
 * The tied LM head's loss: normed [rows, H], W [V, H], int32 labels [rows] -> each row's loss
 * log sum exp(l - max) - (l[label] - max) for logits l = normed W^T, and what its backward keeps: the
 * loss is the objective, so dLogits = (softmax - onehot) * gradScale comes with it (llm.c's fused
 * classifier). The backward is split like a block's, so a zero-bubble schedule can defer the weight
 * half: lmHeadInputGrad (dNormed = dLogits W) and lmHeadWeightGrad (dW = dLogits^T normed).
 * On wasm the fused kernel (backend/wasm/softmax-cross-entropy.ts) works on transposed logits so every big
 * operand of the matmuls stays on the left; rows are padded to a multiple of 4 with zero rows, which
 * add nothing to dW (their gradient columns meet zero inputs) and whose dNormed rows are dropped.
 * On webgpu the fused kernel (backend/webgpu/softmax-cross-entropy.ts) takes the logits as the matmul
 * leaves them. Elsewhere the same math from tf ops.
 */
export function lmHeadLoss(normed: tf.Tensor2D, wordEmbedding: tf.Tensor2D, labels: tf.Tensor1D, gradScale: number): { losses: tf.Tensor1D; saved: LmHeadSaved } {
  const [rows] = normed.shape;
  const vocab = wordEmbedding.shape[0];
  if (hasKernel(SOFTMAX_CROSS_ENTROPY)) {
    return tidyKeep(() => {
      const padding = (4 - (rows % 4)) % 4;
      const inputs = padding === 0 ? tf.clone(normed) : (tf.pad(normed, [[0, padding], [0, 0]]) as tf.Tensor2D);
      const logitsT = tf.matMul(wordEmbedding, inputs, false, true);
      const [losses, dLogits, dLogitsT] = tf.engine().runKernel(SOFTMAX_CROSS_ENTROPY, { logitsT, labels }, { gradScale }) as tf.Tensor2D[];
      // [V, rows] buffers are 200 MB at GPT-2's vocabulary and batch 8 x 128: freed as soon as dead.
      logitsT.dispose();
      return { losses: losses as unknown as tf.Tensor1D, saved: { rows, dLogits, dLogitsT, inputs } };
    });
  }
  if (hasKernel(SOFTMAX_CROSS_ENTROPY_ROWS)) {
    return tidyKeep(() => {
      const logits = tf.matMul(normed, wordEmbedding, false, true);
      const [losses, dLogits] = tf.engine().runKernel(SOFTMAX_CROSS_ENTROPY_ROWS, { logits, labels }, { gradScale }) as tf.Tensor[];
      logits.dispose();
      return { losses: losses as tf.Tensor1D, saved: { rows, dLogits: dLogits as tf.Tensor2D, inputs: tf.clone(normed) } };
    });
  }
  return tidyKeep(() => {
    const logits = tf.matMul(normed, wordEmbedding, false, true);
    const shifted = tf.sub(logits, tf.max(logits, 1, true));
    const exps = tf.exp(shifted);
    const sums = tf.sum(exps, 1, true);
    const picked = pickLabels(shifted as tf.Tensor2D, labels);
    const losses = tf.sub(tf.reshape(tf.log(sums), [rows]), picked) as tf.Tensor1D;
    // oneHot in float32 on wasm returns int32 bit patterns (MEASURED.md): cast an int32 one-hot.
    const oneHot = tf.cast(tf.oneHot(labels, vocab), 'float32');
    // The kernel's order: exp * (scale / sum), then scale off at the label.
    const dLogits = tf.sub(tf.mul(exps, tf.div(gradScale, sums)), tf.mul(oneHot, gradScale)) as tf.Tensor2D;
    return { losses, saved: { rows, dLogits, inputs: tf.clone(normed) } };
  });
}

/**
 * The head input's share of the backward, dNormed = dLogits W [rows, H] (without the padding rows);
 * the partial sum of this rank's vocabulary when W is a shard. Frees dLogits where the weight half has
 * its transposed copy.
 */
export function lmHeadInputGrad(saved: LmHeadSaved, wordEmbedding: tf.Tensor2D): tf.Tensor2D {
  const dLogits = saved.dLogits;
  if (dLogits === undefined) throw new Error('lmHeadInputGrad: the input gradient of this head was already taken');
  const hidden = wordEmbedding.shape[1];
  const dInputs = tf.matMul(dLogits, wordEmbedding) as tf.Tensor2D;
  if (saved.dLogitsT !== undefined) {
    dLogits.dispose();
    saved.dLogits = undefined;
  }
  if (dInputs.shape[0] === saved.rows) return dInputs;
  const dNormed = tf.slice(dInputs, [0, 0], [saved.rows, hidden]) as tf.Tensor2D;
  dInputs.dispose();
  return dNormed;
}

/** The tied word embedding's share from the head, dW = dLogits^T normed [V, H]. Frees everything `saved` holds. */
export function lmHeadWeightGrad(saved: LmHeadSaved): tf.Tensor2D {
  try {
    if (saved.dLogitsT !== undefined) return tf.matMul(saved.dLogitsT, saved.inputs) as tf.Tensor2D;
    if (saved.dLogits === undefined) throw new Error('lmHeadWeightGrad: nothing left of this head\'s logits gradient');
    return tf.matMul(saved.dLogits, saved.inputs, true, false) as tf.Tensor2D;
  } finally {
    releaseLmHead(saved);
  }
}

export function releaseLmHead(saved: LmHeadSaved): void {
  tf.dispose([saved.dLogits, saved.dLogitsT, saved.inputs].filter((t): t is tf.Tensor2D => t !== undefined));
  saved.dLogits = undefined;
  saved.dLogitsT = undefined;
}

/** The tied LM head's loss and both halves of its backward at once (lmHeadLoss, lmHeadInputGrad, lmHeadWeightGrad). */
export function lmHeadCrossEntropy(
  normed: tf.Tensor2D, wordEmbedding: tf.Tensor2D, labels: tf.Tensor1D, gradScale: number,
): { losses: tf.Tensor1D; dNormed: tf.Tensor2D; dWordEmbedding: tf.Tensor2D } {
  const { losses, saved } = lmHeadLoss(normed, wordEmbedding, labels, gradScale);
  try {
    const dNormed = lmHeadInputGrad(saved, wordEmbedding);
    return { losses, dNormed, dWordEmbedding: lmHeadWeightGrad(saved) };
  } finally {
    releaseLmHead(saved);
  }
}

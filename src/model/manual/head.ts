/**
 * Implements: the model's head (GPT.headLoss) as a forward that keeps what its backward needs, and the
 * analytic backward: final LayerNorm, the LM head tied to the word embedding, and the mean next-token
 * cross-entropy with its fused gradient (softmax - onehot) / rows.
 *
 * The one-hot is never built: with P = softmax / rows and Y the one-hot / rows,
 *   dRows = (P - Y) W = P W - W[labels] / rows         (a gather)
 *   dW    = (P - Y)^T X = P^T X - scatter(X at labels) / rows   (an unsortedSegmentSum)
 * which replaces three passes over [rows, V] (oneHot, cast, subtract) by two over [rows, H].
 * The last position predicts nothing, so it is dropped before the norm; its gradient is zero.
 */
import * as tf from '../../tf.ts';
import { tidyKeep } from './tidy.ts';
import type { GPTConfig } from '../config.ts';
import { layerNormBackward, layerNormForward, type LayerNormSaved } from './primitives.ts';

export interface HeadSaved {
  batch: number;
  seqLen: number;
  norm: LayerNormSaved;
  /** Final LN output of the predicting positions [B*(T-1), H]: the LM head's input. */
  normed: tf.Tensor2D;
  /** exp(logits - rowmax) [B*(T-1), V] and its row sums [B*(T-1), 1]. */
  exps: tf.Tensor2D;
  sums: tf.Tensor2D;
  /** Next-token labels [B*(T-1)], int32. */
  labels: tf.Tensor1D;
}

/** x [B, T, H], ids int32 [B, T] -> mean cross-entropy (scalar). */
export function headForward(
  wordEmbedding: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, x: tf.Tensor3D, ids: tf.Tensor2D, config: GPTConfig,
): { loss: tf.Scalar; saved: HeadSaved } {
  return tidyKeep(() => {
    const [batch, seqLen, hidden] = x.shape;
    const predicting = batch * (seqLen - 1);
    const vocab = config.vocabSize;
    const rowsIn = tf.reshape(tf.slice(x, [0, 0, 0], [batch, seqLen - 1, hidden]), [predicting, hidden]) as tf.Tensor2D;
    const norm = layerNormForward(rowsIn, gamma, beta, config.layerNormEpsilon);
    const logits = tf.matMul(norm.y, wordEmbedding as tf.Tensor2D, false, true);
    const labels = tf.reshape(tf.slice(ids, [0, 1], [batch, seqLen - 1]), [predicting]) as tf.Tensor1D;
    // [rows, V] buffers are 200 MB at GPT-2's vocabulary and batch 8 x 128: freed as soon as dead.
    const shifted = tf.sub(logits, tf.max(logits, 1, true));
    logits.dispose();
    const exps = tf.exp(shifted) as tf.Tensor2D;
    const sums = tf.sum(exps, 1, true) as tf.Tensor2D;
    const picked = tf.gather(tf.reshape(shifted, [predicting * vocab]), tf.add(labels, tf.range(0, predicting * vocab, vocab, 'int32')));
    shifted.dispose();
    const loss = tf.mean(tf.sub(tf.reshape(tf.log(sums), [predicting]), picked)) as tf.Scalar;
    return { loss, saved: { batch, seqLen, norm: norm.saved, normed: norm.y, exps, sums, labels } };
  });
}

/**
 * Gradients for d(loss) = `lossGrad` (1 when the loss is the objective): dx [B, T, H] (zero at the last
 * position) and the head's parameters. The word embedding's is the tied head's share only.
 */
export function headBackward(
  wordEmbedding: tf.Tensor, gamma: tf.Tensor, saved: HeadSaved, config: GPTConfig, lossGrad = 1,
): { dx: tf.Tensor3D; dWordEmbedding: tf.Tensor2D; dGamma: tf.Tensor1D; dBeta: tf.Tensor1D } {
  return tidyKeep(() => {
    const { batch, seqLen } = saved;
    const hidden = config.hiddenSize;
    const predicting = batch * (seqLen - 1);
    const scale = lossGrad / predicting;
    const probs = tf.div(saved.exps, tf.mul(saved.sums, 1 / scale)) as tf.Tensor2D;
    const dNormed = tf.sub(tf.matMul(probs, wordEmbedding as tf.Tensor2D), tf.mul(tf.gather(wordEmbedding, saved.labels), scale)) as tf.Tensor2D;
    const dWordEmbedding = tf.sub(
      tf.matMul(probs, saved.normed, true, false),
      tf.unsortedSegmentSum(tf.mul(saved.normed, scale), saved.labels, config.vocabSize),
    ) as tf.Tensor2D;
    const norm = layerNormBackward(dNormed, saved.norm, gamma);
    const dPredicting = tf.reshape(norm.dx, [batch, seqLen - 1, hidden]);
    const dx = tf.pad(dPredicting, [[0, 0], [0, 1], [0, 0]]) as tf.Tensor3D;
    return { dx, dWordEmbedding, dGamma: norm.dgamma, dBeta: norm.dbeta };
  });
}

export interface HeadGrads {
  /** Gradient of the head's input [B, T, H]. */
  dx: tf.Tensor3D;
  /** The tied LM head's share of the word embedding's gradient. */
  dWordEmbedding: tf.Tensor2D;
  dGamma: tf.Tensor1D;
  dBeta: tf.Tensor1D;
}

/**
 * The head's forward and its backward at once: the loss is the objective, so its gradient is known in
 * the forward, and the [rows, V] softmax need not be kept until the backward (llm.c's fused classifier).
 * A pipeline's last stage then holds [V, H] of gradient per in-flight micro-batch instead of [rows, V].
 */
export function headForwardBackward(
  wordEmbedding: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, x: tf.Tensor3D, ids: tf.Tensor2D, config: GPTConfig, lossGrad = 1,
): { loss: tf.Scalar; grads: HeadGrads } {
  const { loss, saved } = headForward(wordEmbedding, gamma, beta, x, ids, config);
  try {
    return { loss, grads: headBackward(wordEmbedding, gamma, saved, config, lossGrad) };
  } finally {
    tf.dispose(saved as unknown as tf.TensorContainer);
  }
}

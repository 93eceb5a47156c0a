/**
 * Implements: the model's head (GPT.headLoss) forward and its analytic backward in one call: final
 * LayerNorm, the LM head tied to the word embedding, and the mean next-token cross-entropy, whose
 * gradient dLogits = (softmax - onehot) / rows comes with the loss (primitives.ts lmHeadCrossEntropy;
 * llm.c's fused classifier). Then dRows = dLogits W and dW = dLogits^T X.
 * The [rows, V] logits and their gradient live only inside this call: a pipeline's last stage holds
 * [V, H] of gradient per in-flight micro-batch instead of [rows, V].
 * The last position predicts nothing, so it is dropped before the norm; its gradient is zero.
 */
import * as tf from '../../tf.ts';
import { tidyKeep } from './tidy.ts';
import type { GPTConfig } from '../config.ts';
import { layerNormBackward, layerNormForward, lmHeadCrossEntropy } from './primitives.ts';

export interface HeadGrads {
  /** Gradient of the head's input [B, T, H]. */
  dx: tf.Tensor3D;
  /** The tied LM head's share of the word embedding's gradient. */
  dWordEmbedding: tf.Tensor2D;
  dGamma: tf.Tensor1D;
  dBeta: tf.Tensor1D;
}

/**
 * x [B, T, H], ids int32 [B, T] -> the mean cross-entropy (scalar) and the gradients for d(loss) =
 * `lossGrad` (1 when the loss is the objective): dx (zero at the last position) and the head's
 * parameters. The word embedding's is the tied head's share only.
 */
export function headForwardBackward(
  wordEmbedding: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, x: tf.Tensor3D, ids: tf.Tensor2D, config: GPTConfig, lossGrad = 1,
): { loss: tf.Scalar; grads: HeadGrads } {
  return tidyKeep(() => {
    const [batch, seqLen, hidden] = x.shape;
    const predicting = batch * (seqLen - 1);
    const rowsIn = tf.reshape(tf.slice(x, [0, 0, 0], [batch, seqLen - 1, hidden]), [predicting, hidden]) as tf.Tensor2D;
    const norm = layerNormForward(rowsIn, gamma, beta, config.layerNormEpsilon);
    const labels = tf.reshape(tf.slice(ids, [0, 1], [batch, seqLen - 1]), [predicting]) as tf.Tensor1D;
    const head = lmHeadCrossEntropy(norm.y, wordEmbedding as tf.Tensor2D, labels, lossGrad / predicting);
    const loss = tf.mean(head.losses) as tf.Scalar;
    const dWordEmbedding = head.dWordEmbedding;
    const dNormed = head.dNormed;
    const normGrads = layerNormBackward(dNormed, norm.saved, gamma);
    const dPredicting = tf.reshape(normGrads.dx, [batch, seqLen - 1, hidden]);
    const dx = tf.pad(dPredicting, [[0, 0], [0, 1], [0, 0]]) as tf.Tensor3D;
    return { loss, grads: { dx, dWordEmbedding, dGamma: normGrads.dgamma, dBeta: normGrads.dbeta } };
  });
}

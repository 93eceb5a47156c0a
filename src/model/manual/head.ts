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
import { layerNormBackward, layerNormForward, lmHeadCrossEntropy, type LayerNormSaved } from './primitives.ts';
import { allReduce, type CollectiveSteps } from '../../tensor-parallel/collective-steps.ts';
import { vocabParallelCrossEntropySteps, type VocabRange } from '../../tensor-parallel/vocab-parallel.ts';

export interface HeadGrads {
  /** Gradient of the head's input [B, T, H]. */
  dx: tf.Tensor3D;
  /** The tied LM head's share of the word embedding's gradient. */
  dWordEmbedding: tf.Tensor2D;
  dGamma: tf.Tensor1D;
  dBeta: tf.Tensor1D;
}

/**
 * x [B, T, H] (replicated), token ids [B*T] row-major -> the mean cross-entropy (scalar) and the
 * gradients for d(loss) = `lossGrad` (1 when the loss is the objective): dx (zero at the last position,
 * replicated) and the head's parameters; the word embedding's is the tied head's share of this rank's
 * vocabulary rows. With the whole vocabulary (`range` covering it) the logits go through the fused
 * softmax cross-entropy; split over a tp group, through the vocab-parallel cross-entropy, and the
 * input gradient, a sum over the vocabulary, is all-reduced (the head is column-parallel by vocabulary).
 */
export function* headForwardBackwardSteps(
  wordShard: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, x: tf.Tensor3D, ids: Int32Array, range: VocabRange, config: GPTConfig, lossGrad = 1,
): CollectiveSteps<{ loss: tf.Scalar; grads: HeadGrads }> {
  const [batch, seqLen, hidden] = x.shape;
  const predicting = batch * (seqLen - 1);
  const labels = labelsOf(ids, batch, seqLen);
  const norm: { y: tf.Tensor2D; saved: LayerNormSaved } = tidyKeep(() => {
    const rowsIn = tf.reshape(tf.slice(x, [0, 0, 0], [batch, seqLen - 1, hidden]), [predicting, hidden]) as tf.Tensor2D;
    return layerNormForward(rowsIn, gamma, beta, config.layerNormEpsilon);
  });
  const held: tf.TensorContainer[] = [norm as unknown as tf.TensorContainer];
  let done = false;
  try {
    let head: { losses: tf.Tensor1D; dNormed: tf.Tensor2D; dWordEmbedding: tf.Tensor2D };
    if (range.size === config.vocabSize) {
      head = tidyKeep(() => lmHeadCrossEntropy(norm.y, wordShard as tf.Tensor2D, tf.tensor1d(labels, 'int32'), lossGrad / predicting));
    } else {
      const logits = tf.matMul(norm.y, wordShard as tf.Tensor2D, false, true) as tf.Tensor2D;
      let crossEntropy: { losses: tf.Tensor1D; dLogits: tf.Tensor2D };
      try {
        crossEntropy = yield* vocabParallelCrossEntropySteps(logits, labels, range, lossGrad / predicting);
      } finally {
        logits.dispose();
      }
      const partial = tidyKeep(() => ({
        dNormed: tf.matMul(crossEntropy.dLogits, wordShard as tf.Tensor2D),
        dWordEmbedding: tf.matMul(crossEntropy.dLogits, norm.y, true, false) as tf.Tensor2D,
      }));
      crossEntropy.dLogits.dispose();
      held.push(crossEntropy.losses, partial.dWordEmbedding);
      const dNormed = (yield allReduce(partial.dNormed, 'sum', 'LM head input gradient')) as tf.Tensor2D;
      head = { losses: crossEntropy.losses, dNormed, dWordEmbedding: partial.dWordEmbedding };
    }
    const result = tidyKeep(() => {
      const loss = tf.mean(head.losses) as tf.Scalar;
      const normGrads = layerNormBackward(head.dNormed, norm.saved, gamma);
      const dPredicting = tf.reshape(normGrads.dx, [batch, seqLen - 1, hidden]);
      const dx = tf.pad(dPredicting, [[0, 0], [0, 1], [0, 0]]) as tf.Tensor3D;
      return { loss, grads: { dx, dWordEmbedding: head.dWordEmbedding, dGamma: normGrads.dgamma, dBeta: normGrads.dbeta } };
    });
    tf.dispose([head.losses, head.dNormed, norm as unknown as tf.TensorContainer]);
    done = true;
    return result;
  } finally {
    if (!done) tf.dispose(held);
  }
}

/** Next-token labels: position t predicts token t+1, rows [B * (T - 1)]. */
function labelsOf(ids: Int32Array, batch: number, seqLen: number): Int32Array {
  const labels = new Int32Array(batch * (seqLen - 1));
  for (let row = 0; row < batch; row++) labels.set(ids.subarray(row * seqLen + 1, (row + 1) * seqLen), row * (seqLen - 1));
  return labels;
}

/**
 * Implements: the model's head (GPT.headLoss) with its analytic backward: final LayerNorm, the LM head
 * tied to the word embedding, and the mean next-token cross-entropy. The loss is the objective, so its
 * gradient dLogits = (softmax - onehot) / rows comes with the forward (primitives.ts lmHeadLoss; llm.c's
 * fused classifier); the backward is split like a block's: the input half dRows = dLogits W (with the
 * norm's backward) and the weight half dW = dLogits^T X, which a zero-bubble schedule defers. The head's
 * three products cost alike, so doing both gradient products in the forward (as this file did) made the
 * last stage's forward three times its backward, the shape a zero-bubble schedule cannot fill.
 * Between forward and backward a micro-batch keeps dLogits [rows, V] (twice on wasm: both orientations,
 * so every big operand stays on the left of its product); below `rows` = H that is less than the
 * [V, H] weight gradient it used to keep.
 * The last position predicts nothing, so it is dropped before the norm; its gradient is zero.
 */
import * as tf from '../../tf.ts';
import { tidyKeep } from './tidy.ts';
import type { GPTConfig } from '../config.ts';
import { layerNormBackward, layerNormForward, lmHeadInputGrad, lmHeadLoss, lmHeadWeightGrad, releaseLmHead, type LayerNormSaved, type LmHeadSaved } from './primitives.ts';
import { allReduce, type CollectiveSteps } from '../../tensor-parallel/collective-steps.ts';
import { vocabParallelCrossEntropySteps, type VocabRange } from '../../tensor-parallel/vocab-parallel.ts';

/** What the head's forward keeps for its backward. */
export interface HeadSaved {
  norm: LayerNormSaved;
  logits: LmHeadSaved;
  batch: number;
  seqLen: number;
}

/** What the head's weight half needs, left by its input half; the norm's parameter gradients are already done. */
export interface HeadWeightWork {
  logits: LmHeadSaved;
  dGamma: tf.Tensor1D;
  dBeta: tf.Tensor1D;
}

export interface HeadGrads {
  /** The tied LM head's share of the word embedding's gradient. */
  dWordEmbedding: tf.Tensor2D;
  dGamma: tf.Tensor1D;
  dBeta: tf.Tensor1D;
}

/**
 * x [B, T, H] (replicated), token ids [B*T] row-major -> the mean cross-entropy (scalar) and what the
 * backward needs for d(loss) = `lossGrad` (1 when the loss is the objective). With the whole vocabulary
 * (`range` covering it) the logits go through the fused softmax cross-entropy; split over a tp group,
 * through the vocab-parallel cross-entropy (the head is column-parallel by vocabulary).
 */
export function* headForwardSteps(
  wordShard: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, x: tf.Tensor3D, ids: Int32Array, range: VocabRange, config: GPTConfig, lossGrad = 1,
): CollectiveSteps<{ loss: tf.Scalar; saved: HeadSaved }> {
  const [batch, seqLen, hidden] = x.shape;
  const predicting = batch * (seqLen - 1);
  const labels = labelsOf(ids, batch, seqLen);
  const norm: { y: tf.Tensor2D; saved: LayerNormSaved } = tidyKeep(() => {
    const rowsIn = tf.reshape(tf.slice(x, [0, 0, 0], [batch, seqLen - 1, hidden]), [predicting, hidden]) as tf.Tensor2D;
    return layerNormForward(rowsIn, gamma, beta, config.layerNormEpsilon);
  });
  let done = false;
  try {
    let losses: tf.Tensor1D;
    let logits: LmHeadSaved;
    if (range.size === config.vocabSize) {
      ({ losses, saved: logits } = tidyKeep(() => lmHeadLoss(norm.y, wordShard as tf.Tensor2D, tf.tensor1d(labels, 'int32'), lossGrad / predicting)));
    } else {
      const shardLogits = tf.matMul(norm.y, wordShard as tf.Tensor2D, false, true) as tf.Tensor2D;
      let crossEntropy: { losses: tf.Tensor1D; dLogits: tf.Tensor2D };
      try {
        crossEntropy = yield* vocabParallelCrossEntropySteps(shardLogits, labels, range, lossGrad / predicting);
      } finally {
        shardLogits.dispose();
      }
      losses = crossEntropy.losses;
      logits = { rows: predicting, dLogits: crossEntropy.dLogits, inputs: tf.clone(norm.y) };
    }
    const loss = tidyKeep(() => tf.mean(losses) as tf.Scalar);
    losses.dispose();
    norm.y.dispose();
    done = true;
    return { loss, saved: { norm: norm.saved, logits, batch, seqLen } };
  } finally {
    if (!done) tf.dispose(norm as unknown as tf.TensorContainer);
  }
}

/**
 * The input half: dx [B, T, H] (zero at the last position, replicated over the tp group, whose partial
 * sums over the vocabulary are all-reduced) and the norm's parameter gradients. Consumes `saved`.
 */
export function* headBackwardInputSteps(
  saved: HeadSaved, wordShard: tf.Tensor, gamma: tf.Tensor, config: GPTConfig,
): CollectiveSteps<{ dx: tf.Tensor3D; work: HeadWeightWork }> {
  const { batch, seqLen } = saved;
  let dNormed: tf.Tensor2D | undefined;
  let done = false;
  try {
    const partial = lmHeadInputGrad(saved.logits, wordShard as tf.Tensor2D);
    // The all-reduce takes `partial` (collective-steps.ts frees it).
    dNormed = wordShard.shape[0] === config.vocabSize ? partial : ((yield allReduce(partial, 'sum', 'LM head input gradient')) as tf.Tensor2D);
    const upstream = dNormed;
    const result = tidyKeep(() => {
      const normGrads = layerNormBackward(upstream, saved.norm, gamma);
      const dPredicting = tf.reshape(normGrads.dx, [batch, seqLen - 1, config.hiddenSize]);
      const dx = tf.pad(dPredicting, [[0, 0], [0, 1], [0, 0]]) as tf.Tensor3D;
      return { dx, dGamma: normGrads.dgamma, dBeta: normGrads.dbeta };
    });
    tf.dispose([dNormed, saved.norm as unknown as tf.TensorContainer]);
    done = true;
    return { dx: result.dx, work: { logits: saved.logits, dGamma: result.dGamma, dBeta: result.dBeta } };
  } finally {
    if (!done) {
      dNormed?.dispose();
      releaseHead(saved);
    }
  }
}

/** The weight half: the tied word embedding's share from the head, with the norm's gradients. Consumes `work`. */
export function headBackwardWeight(work: HeadWeightWork): HeadGrads {
  return { dWordEmbedding: lmHeadWeightGrad(work.logits), dGamma: work.dGamma, dBeta: work.dBeta };
}

/** Frees a head's saved state or weight work, whatever half it is in. */
export function releaseHead(head: HeadSaved | HeadWeightWork): void {
  releaseLmHead(head.logits);
  tf.dispose(head as unknown as tf.TensorContainer);
}

/** Next-token labels: position t predicts token t+1, rows [B * (T - 1)]. */
function labelsOf(ids: Int32Array, batch: number, seqLen: number): Int32Array {
  const labels = new Int32Array(batch * (seqLen - 1));
  for (let row = 0; row < batch; row++) labels.set(ids.subarray(row * seqLen + 1, (row + 1) * seqLen), row * (seqLen - 1));
  return labels;
}

/**
 * Implements: the token + position embedding (GPT.embed) as a forward that keeps what its backward
 * needs, and the analytic backward: the word embedding's gradient is a scatter-add of the output
 * gradient's rows at the token ids (unsortedSegmentSum; the project registers it on wasm), the position
 * embedding's the output gradient summed over the batch, zero beyond seqLen.
 */
import * as tf from '../../tf.ts';
import { tidyKeep } from './tidy.ts';
import type { GPTConfig } from '../config.ts';
import { DropoutSite, EMBEDDING_LAYER, dropoutMask, type DropoutContext } from '../dropout.ts';

export interface EmbeddingSaved {
  /** Token ids flattened to [B*T], int32. */
  ids: tf.Tensor1D;
  batch: number;
  seqLen: number;
  /** Scaled keep-mask [B, T, H] when dropout applied. */
  mask?: tf.Tensor3D;
}

/** ids int32 [B, T] -> x [B, T, H]. */
export function embeddingForward(
  wordEmbedding: tf.Tensor, positionEmbedding: tf.Tensor, ids: tf.Tensor2D, config: GPTConfig, dropout?: DropoutContext,
): { y: tf.Tensor3D; saved: EmbeddingSaved } {
  return tidyKeep(() => {
    const [batch, seqLen] = ids.shape;
    const hidden = config.hiddenSize;
    const flatIds = tf.reshape(ids, [batch * seqLen]) as tf.Tensor1D;
    const words = tf.reshape(tf.gather(wordEmbedding, flatIds), [batch, seqLen, hidden]);
    const positions = tf.slice(positionEmbedding, [0, 0], [seqLen, hidden]);
    let y = tf.add(words, positions) as tf.Tensor3D;
    let mask: tf.Tensor3D | undefined;
    if (config.embedDropRate !== 0 && dropout !== undefined) {
      mask = dropoutMask(dropout, config.embedDropRate, EMBEDDING_LAYER, DropoutSite.Embedding, [seqLen, hidden]) as tf.Tensor3D;
      y = tf.mul(y, mask) as tf.Tensor3D;
    }
    return { y, saved: { ids: flatIds, batch, seqLen, mask } };
  });
}

/** dy [B, T, H] -> gradients of the word [V, H] and position [maxPositions, H] embeddings. */
export function embeddingBackward(saved: EmbeddingSaved, dy: tf.Tensor3D, config: GPTConfig): { dWordEmbedding: tf.Tensor2D; dPositionEmbedding: tf.Tensor2D } {
  return tidyKeep(() => {
    const { batch, seqLen } = saved;
    const hidden = config.hiddenSize;
    const d = saved.mask === undefined ? dy : tf.mul(dy, saved.mask);
    const rows = tf.reshape(d, [batch * seqLen, hidden]);
    const dWordEmbedding = tf.unsortedSegmentSum(rows, saved.ids, config.vocabSize) as tf.Tensor2D;
    const positionRows = tf.sum(d, 0) as tf.Tensor2D;
    const unused = config.maxPositionEmbeddings - seqLen;
    const dPositionEmbedding = unused === 0 ? positionRows : (tf.pad(positionRows, [[0, unused], [0, 0]]) as tf.Tensor2D);
    return { dWordEmbedding, dPositionEmbedding };
  });
}

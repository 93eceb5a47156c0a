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
import { allReduce, type CollectiveSteps } from '../../tensor-parallel/collective-steps.ts';
import { gradientRows, maskedLookup, type VocabRange } from '../../tensor-parallel/vocab-parallel.ts';
import { sumRows } from './primitives.ts';

export interface EmbeddingSaved {
  /** Per token (B*T, row-major) the word-embedding row of this rank's shard its gradient goes to; -1: another rank's (or no) row. */
  rows: Int32Array;
  /** Rows of this rank's word-embedding shard. */
  vocabRows: number;
  batch: number;
  seqLen: number;
  /** Scaled keep-mask [B, T, H] when dropout applied. */
  mask?: tf.Tensor3D;
}

/**
 * Token ids [B*T] -> x [B, T, H] (replicated). Vocab-parallel: a rank looks up the ids its shard owns
 * (zero rows for the others, masked), the lookups are summed over the group, then the replicated
 * position embedding is added. With the whole vocabulary on one rank it is a plain gather.
 */
export function* embeddingForwardSteps(
  wordShard: tf.Tensor, positionEmbedding: tf.Tensor, ids: Int32Array, batch: number, seqLen: number, range: VocabRange, config: GPTConfig, dropout?: DropoutContext,
): CollectiveSteps<{ y: tf.Tensor3D; saved: EmbeddingSaved }> {
  const hidden = config.hiddenSize;
  const lookedUp = tf.tidy(() => maskedLookup(wordShard as tf.Tensor2D, ids, range));
  const words = yield allReduce(lookedUp, 'sum', 'embedding lookup');
  const { y, mask } = tidyKeep(() => {
    const positions = tf.slice(positionEmbedding, [0, 0], [seqLen, hidden]);
    let y = tf.add(tf.reshape(words, [batch, seqLen, hidden]), positions) as tf.Tensor3D;
    let mask: tf.Tensor3D | undefined;
    if (config.embedDropRate !== 0 && dropout !== undefined) {
      mask = dropoutMask(dropout, config.embedDropRate, EMBEDDING_LAYER, DropoutSite.Embedding, [seqLen, hidden]) as tf.Tensor3D;
      y = tf.mul(y, mask) as tf.Tensor3D;
    }
    return { y, mask };
  });
  words.dispose();
  return { y, saved: { rows: gradientRows(ids, range), vocabRows: range.size, batch, seqLen, mask } };
}

/**
 * The word embedding's gradient restricted to the rows a backward can touch: `values[i]` is row `ids[i]`
 * of the dense gradient, every other row is +0. `ids` are distinct, in order of first appearance.
 */
export interface WordEmbeddingRows {
  ids: Int32Array;
  values: tf.Tensor2D;
}

/** dy [B, T, H] -> gradients of the word [V, H] and position [maxPositions, H] embeddings. */
export function embeddingBackward(saved: EmbeddingSaved, dy: tf.Tensor3D, config: GPTConfig): { dWordEmbedding: tf.Tensor2D; dPositionEmbedding: tf.Tensor2D } {
  return tidyKeep(() => {
    const d = throughDropout(saved, dy);
    const dWordEmbedding = tf.unsortedSegmentSum(tokenRows(saved, d, config), tf.tensor1d(saved.rows, 'int32'), saved.vocabRows) as tf.Tensor2D;
    return { dWordEmbedding, dPositionEmbedding: positionGradient(saved, d, config) };
  });
}

/**
 * embeddingBackward with the word embedding's gradient as rows (WordEmbeddingRows): each row holds the
 * same sum, added in the same token order, as the dense gradient's row. A pipeline stage keeps one
 * micro-batch's rows instead of clearing and adding a dense vocab x hidden gradient per micro-batch
 * (measured ~37 ms of the first stage's 680 ms per micro-batch at vocabulary 50304, hidden 256).
 */
export function embeddingRowsBackward(saved: EmbeddingSaved, dy: tf.Tensor3D, config: GPTConfig): { dWordEmbeddingRows: WordEmbeddingRows; dPositionEmbedding: tf.Tensor2D } {
  const slotOf = new Map<number, number>();
  // A token whose row this rank does not hold gets slot -1, which the scatter-add drops.
  const slots = Int32Array.from(saved.rows, (id) => {
    if (id < 0) return -1;
    let slot = slotOf.get(id);
    if (slot === undefined) slotOf.set(id, (slot = slotOf.size));
    return slot;
  });
  return tidyKeep(() => {
    const d = throughDropout(saved, dy);
    // A tp shard may own none of a micro-batch's ids; a scatter-add into zero rows fails on cpu.
    const values = slotOf.size === 0
      ? (tf.zeros([0, config.hiddenSize]) as tf.Tensor2D)
      : (tf.unsortedSegmentSum(tokenRows(saved, d, config), tf.tensor1d(slots, 'int32'), slotOf.size) as tf.Tensor2D);
    return { dWordEmbeddingRows: { ids: Int32Array.from(slotOf.keys()), values }, dPositionEmbedding: positionGradient(saved, d, config) };
  });
}

/** The output gradient through the forward's dropout mask, [B, T, H]. */
function throughDropout(saved: EmbeddingSaved, dy: tf.Tensor3D): tf.Tensor3D {
  return saved.mask === undefined ? dy : (tf.mul(dy, saved.mask) as tf.Tensor3D);
}

/** One row per token: [B*T, H]. */
function tokenRows(saved: EmbeddingSaved, d: tf.Tensor3D, config: GPTConfig): tf.Tensor2D {
  return tf.reshape(d, [saved.batch * saved.seqLen, config.hiddenSize]);
}

/** The position embedding's gradient: `d` (through dropout) summed over the batch, zero beyond seqLen. */
function positionGradient(saved: EmbeddingSaved, d: tf.Tensor3D, config: GPTConfig): tf.Tensor2D {
  const [batch, seqLen, hidden] = d.shape;
  const positionRows = tf.reshape(sumRows(tf.reshape(d, [batch, seqLen * hidden]) as tf.Tensor2D), [seqLen, hidden]) as tf.Tensor2D;
  const unused = config.maxPositionEmbeddings - saved.seqLen;
  return unused === 0 ? positionRows : (tf.pad(positionRows, [[0, unused], [0, 0]]) as tf.Tensor2D);
}

/**
 * The dense word-embedding gradient [V, H] of rows gathered over several backwards, added in the order
 * given with one float32 rounding per addition, as adding their dense gradients would: the additions
 * run over the rows any part touched ([U, H], U <= tokens), and only the result is spread over the
 * vocabulary. (A single scatter-add of every part would be cheaper still, but the cpu kernel sums in
 * double precision and would round differently.)
 */
export function denseWordEmbeddingGradient(parts: readonly WordEmbeddingRows[], vocabRows: number, config: GPTConfig): tf.Tensor2D {
  const slotOf = new Map<number, number>();
  for (const part of parts) for (const id of part.ids) if (!slotOf.has(id)) slotOf.set(id, slotOf.size);
  if (slotOf.size === 0) return tf.zeros([vocabRows, config.hiddenSize]);
  return tf.tidy(() => {
    let sum: tf.Tensor2D | undefined;
    for (const part of parts) {
      // A part of no rows (a tp shard owning none of a micro-batch's ids) spreads zeros; webgpu's scatter-add refuses empty input.
      const spread = part.ids.length === 0
        ? (tf.zeros([slotOf.size, config.hiddenSize]) as tf.Tensor2D)
        : (tf.unsortedSegmentSum(part.values, tf.tensor1d(Int32Array.from(part.ids, (id) => slotOf.get(id)!), 'int32'), slotOf.size) as tf.Tensor2D);
      sum = sum === undefined ? spread : (tf.add(sum, spread) as tf.Tensor2D);
    }
    return tf.unsortedSegmentSum(sum!, tf.tensor1d(Int32Array.from(slotOf.keys()), 'int32'), vocabRows) as tf.Tensor2D;
  });
}

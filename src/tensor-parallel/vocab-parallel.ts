/**
 * Implements: the vocabulary-parallel ends of the model (Megatron's VocabParallelEmbedding and
 * vocab_parallel_cross_entropy): the masked lookup of the ids a rank's vocabulary range owns, and the
 * cross-entropy over logits split by vocabulary columns, where the full [N, V] logits never exist on one
 * rank: only row maxima, row sums of exponentials and target logits ([N] each) cross the group.
 */
import * as tf from '../tf.ts';
import { allReduce, type CollectiveSteps } from './collective-steps.ts';

/** The vocabulary rows [start, start + size) that a tp rank owns. */
export interface VocabRange {
  start: number;
  size: number;
}

/**
 * The word-embedding rows of `ids` that fall in `range`, zeros for the others: summed over the group,
 * these are the full lookup. ids int32 [N] -> [N, H]. Where the range owns every id (a group of one) it
 * is a plain gather, bit for bit.
 */
export function maskedLookup(wordShard: tf.Tensor2D, ids: Int32Array, range: VocabRange): tf.Tensor2D {
  const { localIds, owned } = lookupRows(ids, range);
  const rows = tf.gather(wordShard, tf.tensor1d(localIds, 'int32'));
  if (owned.every((flag) => flag === 1)) return rows;
  return tf.mul(rows, tf.tensor2d(owned, [ids.length, 1])) as tf.Tensor2D;
}

/**
 * The shard rows `maskedLookup` gathers for `ids` (an id's local row where `range` owns it, else row 0,
 * masked out), and the mask.
 */
export function lookupRows(ids: Int32Array, range: VocabRange): { localIds: Int32Array; owned: Float32Array } {
  const localIds = new Int32Array(ids.length);
  const owned = new Float32Array(ids.length);
  ids.forEach((id, i) => {
    const local = id - range.start;
    if (local >= 0 && local < range.size) {
      localIds[i] = local;
      owned[i] = 1;
    }
  });
  return { localIds, owned };
}

/** Per id, the shard row its lookup's gradient reaches: its local row where `range` owns it, else -1 (none). */
export function gradientRows(ids: Int32Array, range: VocabRange): Int32Array {
  return Int32Array.from(ids, (id) => {
    const local = id - range.start;
    return local >= 0 && local < range.size ? local : -1;
  });
}

/**
 * Cross-entropy of local logits [N, V/tp] (columns = this rank's vocabulary range) against global labels
 * [N]: each row's loss (identical on every rank) and the gradient of the local logits for d(loss_row) =
 * `gradScale`, (softmax_local - onehot_local) * gradScale. Two collectives of [N] and [2N]: the MAX of
 * row maxima (for a stable exp), then one SUM carrying the row sums of exp(logit - max) and the target
 * logits (each row's owner contributes it, others 0). The caller keeps ownership of `localLogits`.
 */
export function* vocabParallelCrossEntropySteps(
  localLogits: tf.Tensor2D, labels: Int32Array, range: VocabRange, gradScale: number,
): CollectiveSteps<{ losses: tf.Tensor1D; dLogits: tf.Tensor2D }> {
  const [rows, width] = localLogits.shape;
  if (width !== range.size) throw new Error(`local logits have ${width} columns but the vocabulary range holds ${range.size}`);
  if (labels.length !== rows) throw new Error(`${labels.length} labels for ${rows} rows of logits`);
  const rowMax = yield allReduce(tf.max(localLogits, 1), 'max', 'cross-entropy row maxima');
  // oneHot of -1 is a zero row: labels another rank owns. Cast an int32 one-hot (float32 oneHot is wrong on wasm).
  const { exps, oneHot, packed } = tf.tidy(() => {
    const shifted = tf.sub(localLogits, tf.reshape(rowMax, [rows, 1]));
    const exps = tf.exp(shifted);
    const oneHot = tf.cast(tf.oneHot(tf.tensor1d(gradientRows(labels, range), 'int32'), width), 'float32');
    // Target logit minus the row max from the rank that owns the label; exactly 0 from the others.
    const packed = tf.concat([tf.sum(exps, 1), tf.sum(tf.mul(shifted, oneHot), 1)]);
    return { exps, oneHot, packed };
  });
  rowMax.dispose();
  let reduced: tf.Tensor | undefined;
  try {
    reduced = yield allReduce(packed, 'sum', 'cross-entropy sums and targets');
  } finally {
    // A failed collective abandons the steps here (the driver returns them).
    if (reduced === undefined) tf.dispose([exps, oneHot]);
  }
  const sumsAndTargets = reduced;
  const result = tf.tidy(() => {
    const [sums, targets] = tf.split(sumsAndTargets, 2);
    const losses = tf.sub(tf.log(sums!), targets!) as tf.Tensor1D;
    const dLogits = tf.mul(tf.sub(tf.div(exps, tf.reshape(sums!, [rows, 1])), oneHot), gradScale) as tf.Tensor2D;
    return { losses, dLogits };
  });
  tf.dispose([reduced, exps, oneHot]);
  return result;
}

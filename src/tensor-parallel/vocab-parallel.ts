/**
 * Implements: the vocabulary-parallel ends of the model (Megatron's VocabParallelEmbedding and
 * vocab_parallel_cross_entropy): the masked lookup of the ids a rank's vocabulary range owns, and the
 * cross-entropy over logits split by vocabulary columns, where the full [N, V] logits never exist on one
 * rank: only row maxima, row sums of exponentials and target logits ([N] each) cross the group.
 */
import * as tf from '../tf.ts';
import { allReduceTensor, type TensorParallelGroup } from './segment-chain.ts';

/** The vocabulary rows [start, start + size) that a tp rank owns. */
export interface VocabRange {
  start: number;
  size: number;
}

/**
 * The word-embedding rows of `ids` that fall in `range`, zeros for the others: summed over the group,
 * these are the full lookup. ids int32 [N] -> [N, H]. The mask is a constant, so gather's gradient only
 * reaches owned rows.
 */
export function maskedLookup(wordShard: tf.Tensor2D, ids: Int32Array, range: VocabRange): tf.Tensor2D {
  const { localIds, owned } = lookupRows(ids, range);
  const rows = tf.gather(wordShard, tf.tensor1d(localIds, 'int32'));
  return tf.mul(rows, tf.tensor2d(owned, [ids.length, 1])) as tf.Tensor2D;
}

/**
 * The shard rows `maskedLookup` gathers for `ids` (an id's local row where `range` owns it, else row 0,
 * masked out), which are also the only rows its gradient can reach, and the mask.
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

/** A vocab-parallel cross-entropy's forward: the loss, and what its backward needs. */
export interface VocabParallelLoss {
  /** Mean over rows of log(sum_v exp(logit_v)) - logit_target, identical on every rank. */
  loss: number;
  /**
   * d loss / d local logits ([N, V/tp]) for an upstream gradient `scale` (1 for the loss itself):
   * (softmax_local - onehot_local) / N. Consumes the saved tensors: call once.
   */
  backward(scale?: number): tf.Tensor2D;
  /** Frees the saved tensors without a backward. */
  dispose(): void;
}

/**
 * Cross-entropy of local logits [N, V/tp] (columns = this rank's vocabulary range) against global
 * labels [N]. Three reductions of [N]: the MAX of row maxima (for a stable exp), then one SUM carrying
 * the row sums of exp(logit - max) and the target logits (each row's owner contributes it, others 0).
 */
export async function vocabParallelCrossEntropy(
  group: TensorParallelGroup,
  localLogits: tf.Tensor2D,
  labels: Int32Array,
  range: VocabRange,
): Promise<VocabParallelLoss> {
  const [rows, width] = localLogits.shape;
  if (width !== range.size) throw new Error(`local logits have ${width} columns but the vocabulary range holds ${range.size}`);
  if (labels.length !== rows) throw new Error(`${labels.length} labels for ${rows} rows of logits`);
  const localMax = tf.max(localLogits, 1);
  const rowMax = await allReduceTensor(group, localMax, 'max');
  localMax.dispose();
  const exps = tf.tidy(() => tf.exp(tf.sub(localLogits, tf.reshape(rowMax, [rows, 1]))));
  // Target logit minus the row max, from the rank that owns the label.
  const localLabels = new Int32Array(rows);
  const shiftedTarget = new Float32Array(rows);
  const logitValues = localLogits.dataSync();
  const maxValues = rowMax.dataSync();
  labels.forEach((label, i) => {
    const local = label - range.start;
    localLabels[i] = local >= 0 && local < range.size ? local : -1;
    if (localLabels[i] >= 0) shiftedTarget[i] = Math.fround(logitValues[i * width + local] - maxValues[i]);
  });
  rowMax.dispose();
  const sumsAndTargets = tf.tidy(() => tf.concat([tf.sum(exps, 1), tf.tensor1d(shiftedTarget)]));
  const reduced = await allReduceTensor(group, sumsAndTargets, 'sum');
  sumsAndTargets.dispose();
  const [sums, targets] = tf.split(reduced, 2);
  reduced.dispose();
  const lossTensor = tf.tidy(() => tf.mean(tf.sub(tf.log(sums), targets)));
  const loss = lossTensor.dataSync()[0];
  lossTensor.dispose();
  targets.dispose();
  let spent = false;
  const dispose = () => {
    if (spent) return;
    spent = true;
    exps.dispose();
    sums.dispose();
  };
  return {
    loss,
    dispose,
    backward(scale = 1) {
      if (spent) throw new Error('vocab-parallel cross-entropy: backward called twice (or after dispose)');
      const grad = tf.tidy(() => {
        // oneHot of -1 is a zero row: labels another rank owns. Cast an int32 one-hot (float32 oneHot is wrong on wasm).
        const oneHot = tf.cast(tf.oneHot(tf.tensor1d(localLabels, 'int32'), width), 'float32');
        const softmax = tf.div(exps, tf.reshape(sums, [rows, 1]));
        return tf.mul(tf.sub(softmax, oneHot), scale / rows) as tf.Tensor2D;
      });
      dispose();
      return grad;
    },
  };
}

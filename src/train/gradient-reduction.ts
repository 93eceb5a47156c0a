/**
 * Implements: the end of every training step's backward, in one place for the single-process trainer
 * and the pipeline stages: per-parameter gradient sums (over this process's micro-batches) and the loss
 * sum become means over the whole global batch. With data parallelism they travel in ONE flat buffer
 * (the loss in its last element): one collective per step instead of one per parameter.
 */
import * as tf from '../tf.ts';
import { BucketedGradientReduction } from './bucketed-reduction.ts';

export interface StepMeans {
  grads: Map<string, tf.Tensor>;
  loss: number;
}

/**
 * `sums` (disposed here) in `names` order; `allReduce` sums over the data-parallel group (omitted: this
 * process holds every contribution); `scale` is 1 / (micro-batches in the global batch).
 */
export async function averageOverGlobalBatch(
  names: readonly string[],
  sums: Map<string, tf.Tensor>,
  lossSum: number,
  scale: number,
  allReduce?: (values: Float32Array) => Promise<Float32Array>,
): Promise<StepMeans> {
  const grads = new Map<string, tf.Tensor>();
  const sumOf = (name: string) => {
    const sum = sums.get(name);
    if (sum === undefined) throw new Error(`no gradient for parameter ${name}: the backward pass did not reach it`);
    return sum;
  };
  if (allReduce === undefined) {
    for (const name of names) grads.set(name, tf.mul(sumOf(name), scale));
    for (const sum of sums.values()) sum.dispose();
    return { grads, loss: lossSum * scale };
  }
  // The whole buffer as one bucket: one collective, once everything is in.
  const reduction = new BucketedGradientReduction(names, names.map((name) => sumOf(name).size), allReduce, Number.POSITIVE_INFINITY);
  reduction.setLoss(lossSum);
  for (const name of names) reduction.setGradient(name, sumOf(name));
  return meansOfReduced(names, sums, await reduction.finish(), scale);
}

/**
 * The means from a reduced flat buffer in BucketedGradientReduction's layout (parameters in `names`
 * order, the loss sum last); `sums` (disposed here) give the shapes.
 */
export function meansOfReduced(names: readonly string[], sums: Map<string, tf.Tensor>, reduced: Float32Array, scale: number): StepMeans {
  const grads = new Map<string, tf.Tensor>();
  let offset = 0;
  for (const name of names) {
    const sum = sums.get(name);
    if (sum === undefined) throw new Error(`no gradient for parameter ${name}: the backward pass did not reach it`);
    const values = reduced.subarray(offset, offset + sum.size);
    grads.set(name, tf.tidy(() => tf.mul(tf.tensor(values, sum.shape, 'float32'), scale)));
    offset += sum.size;
  }
  for (const sum of sums.values()) sum.dispose();
  return { grads, loss: reduced[offset] * scale };
}

/**
 * Implements: adding a gradient into a running sum by parameter name, the one accumulation every
 * backward and every training loop here does (over layers sharing a parameter, micro-batches, chunks).
 */
import * as tf from '../tf.ts';

/** Adds `grad` (taken over: the caller must not use or dispose it after) to `sums`' entry for `name`. */
export function addGradient(sums: Map<string, tf.Tensor>, name: string, grad: tf.Tensor): void {
  const previous = sums.get(name);
  if (previous === undefined) {
    sums.set(name, grad);
    return;
  }
  sums.set(name, tf.add(previous, grad));
  previous.dispose();
  grad.dispose();
}

/**
 * Implements: tf.tidy for functions returning typed records of tensors (saved activations, gradients):
 * every tensor reachable from the result through plain objects and arrays is kept, the rest disposed.
 * tf.tidy itself only accepts results typed as TensorContainer, which interfaces are not.
 */
import * as tf from '../../tf.ts';

export function tidyKeep<T extends object>(fn: () => T): T {
  return tf.tidy(fn as unknown as () => tf.TensorContainer) as unknown as T;
}

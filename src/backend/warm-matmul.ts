/**
 * Implements: having the wasm backend pack weights for matmul before their first product.
 *
 * Why: the wasm BatchMatMul hands xnnpack a right-hand operand, which packs it the first time it sees
 * that tensor and reuses the packing after (wasm/batch-matmul.ts). Every optimizer step makes new weight
 * tensors, so the first micro-batch of each step paid the packing of every weight on its way: measured
 * on the 2-core machine, packing the 50304 x 256 LM head weight took 266 ms, twice its product with a
 * 64-token micro-batch. A pipeline stage that waits for its first activation anyway packs them then.
 * On other backends nothing is cached, so this does nothing.
 */
import * as tf from '../tf.ts';

/** Runs a one-row product with each weight as the right operand, on wasm only. */
export function warmMatmulOperands(weights: readonly tf.Tensor[]): void {
  if (tf.getBackend() !== 'wasm') return;
  for (const weight of weights) {
    if (weight.rank !== 2) throw new Error(`warmMatmulOperands: a matmul weight is 2-D, got shape [${weight.shape}]`);
    tf.tidy(() => {
      tf.matMul(tf.zeros([1, weight.shape[0]]), weight as tf.Tensor2D);
    });
  }
}

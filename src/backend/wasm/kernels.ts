/**
 * Implements: installing (and, for benchmarks and tests, removing) this project's wasm kernels:
 * `UnsortedSegmentSum`, which wasm lacks, faster `BatchMatMul`, `Transpose`, `Slice`, `SplitV`
 * and `Sum` in place of the stock ones, and fused kernels of our own (the LM head's softmax
 * cross-entropy with its gradient, the Adam update, the gradients' sums of squares, LayerNorm and
 * GELU with their backwards), which callers use when registered. Both calls are idempotent; the engine looks
 * kernels up on every op, so a swap takes effect at once, even on a running backend.
 */
import * as tf from '../../tf.ts';
import type { KernelConfig } from '../../tf.ts';
import { wasmBatchMatMulConfig } from './batch-matmul.ts';
import { wasmTransposeConfig } from './transpose.ts';
import { wasmUnsortedSegmentSumConfig } from './unsorted-segment-sum.ts';
import { wasmSliceConfig, wasmSplitVConfig } from './slice.ts';
import { wasmSumConfig } from './sum.ts';
import { wasmSoftmaxCrossEntropyConfig } from './softmax-cross-entropy.ts';
import { wasmAdamUpdateConfig } from './adam.ts';
import { wasmSumOfSquaresConfig } from './sum-of-squares.ts';
import { wasmLayerNormConfig, wasmLayerNormGradConfig } from './layer-norm.ts';
import { wasmGeluConfig, wasmGeluGradConfig } from './gelu.ts';
import { rememberStockKernel, setUpStockKernel, stockKernel } from './stock-kernels.ts';

/** Kernels we add or replace on 'wasm', in registration order. */
export const WASM_TRAINING_KERNELS: readonly KernelConfig[] = [
  wasmTransposeConfig,
  wasmBatchMatMulConfig,
  wasmUnsortedSegmentSumConfig,
  wasmSliceConfig,
  wasmSplitVConfig,
  wasmSumConfig,
  wasmSoftmaxCrossEntropyConfig,
  wasmAdamUpdateConfig,
  wasmSumOfSquaresConfig,
  wasmLayerNormConfig,
  wasmLayerNormGradConfig,
  wasmGeluConfig,
  wasmGeluGradConfig,
];

/** Requires '@tensorflow/tfjs-backend-wasm' to have been imported (it registers the stock kernels). */
export function registerWasmTrainingKernels(): void {
  for (const ours of WASM_TRAINING_KERNELS) {
    const current = tf.getKernel(ours.kernelName, 'wasm');
    if (current === ours) continue;
    rememberStockKernel(ours.kernelName, ours);
    if (current !== undefined) tf.unregisterKernel(ours.kernelName, 'wasm');
    tf.registerKernel(ours);
  }
  // A backend that started before this call never ran our setupFuncs.
  const running = tf.engine().registry['wasm'];
  if (running !== undefined) for (const ours of WASM_TRAINING_KERNELS) setUpStockKernel(ours.kernelName, running);
}

/** Puts the stock kernels back (and removes the ones wasm never had). For comparisons. */
export function restoreStockWasmKernels(): void {
  for (const ours of WASM_TRAINING_KERNELS) {
    if (tf.getKernel(ours.kernelName, 'wasm') !== ours) continue;
    tf.unregisterKernel(ours.kernelName, 'wasm');
    const stock = stockKernel(ours.kernelName);
    if (stock === undefined) continue;
    tf.registerKernel(stock);
    // Its setupFunc ran at backend start only if it was registered then.
    const backend = tf.findBackend('wasm');
    if (backend !== null && stock.setupFunc !== undefined) stock.setupFunc(backend);
  }
}

export function wasmTrainingKernelsRegistered(): boolean {
  return WASM_TRAINING_KERNELS.every((ours) => tf.getKernel(ours.kernelName, 'wasm') === ours);
}

/**
 * Implements: installing (and, for comparisons, removing) this project's fused kernels on 'webgpu':
 * LayerNorm and GELU with their backwards, the Adam update, a linear's bias gradient, attention's softmax with its backward its split into heads and back, the bias and residual sum after a row-parallel linear, the gradients' sums of squares and the LM
 * head's softmax cross-entropy with its gradient (over untransposed logits). Model and optimizer
 * code looks them up by name on every op and falls back to tf ops where they are absent, so both
 * calls take effect at once, even on a running backend.
 *
 * Why: on a GPU a training step of a small model is bound by the cost of each op (~0.36 ms to enqueue
 * one on an H200), not by arithmetic; each of these replaces 8-16 ops by 1-3 dispatches.
 */
import * as tf from '../../tf.ts';
import type { KernelConfig } from '../../tf.ts';
import { webgpuAdamUpdateConfig } from './adam.ts';
import { webgpuMergeHeadsConfig, webgpuSplitHeadsConfig } from './attention-heads.ts';
import { webgpuAttentionSoftmaxConfig } from './attention-softmax.ts';
import { webgpuBiasResidualConfig } from './bias-residual.ts';
import { webgpuColumnSumsConfig } from './column-sums.ts';
import { webgpuGeluConfig, webgpuGeluYConfig } from './gelu.ts';
import { webgpuGeluGradConfig, webgpuGeluGradRecomputeConfig } from './gelu-grad.ts';
import { webgpuLayerNormConfig } from './layer-norm.ts';
import { webgpuLayerNormGradConfig, webgpuLayerNormGradResidualConfig } from './layer-norm-grad.ts';
import { webgpuSoftmaxCrossEntropyConfig } from './softmax-cross-entropy.ts';
import { webgpuSoftmaxGradConfig } from './softmax-grad.ts';
import { webgpuSumOfSquaresConfig } from './sum-of-squares.ts';

export const WEBGPU_TRAINING_KERNELS: readonly KernelConfig[] = [
  webgpuLayerNormConfig,
  webgpuLayerNormGradConfig,
  webgpuLayerNormGradResidualConfig,
  webgpuGeluConfig,
  webgpuGeluGradConfig,
  webgpuGeluYConfig,
  webgpuGeluGradRecomputeConfig,
  webgpuAdamUpdateConfig,
  webgpuColumnSumsConfig,
  webgpuSumOfSquaresConfig,
  webgpuSoftmaxCrossEntropyConfig,
  webgpuAttentionSoftmaxConfig,
  webgpuSoftmaxGradConfig,
  webgpuSplitHeadsConfig,
  webgpuMergeHeadsConfig,
  webgpuBiasResidualConfig,
];

/** Registers the kernels not yet registered (none of them is a stock kernel: nothing is replaced). */
export function registerWebgpuTrainingKernels(kernels: readonly KernelConfig[] = WEBGPU_TRAINING_KERNELS): void {
  for (const ours of kernels) {
    if (tf.getKernel(ours.kernelName, 'webgpu') === undefined) tf.registerKernel(ours);
  }
}

/** Removes them, so the callers fall back to tf ops. For comparisons and benchmarks. */
export function unregisterWebgpuTrainingKernels(kernels: readonly KernelConfig[] = WEBGPU_TRAINING_KERNELS): void {
  for (const ours of kernels) {
    if (tf.getKernel(ours.kernelName, 'webgpu') === ours) tf.unregisterKernel(ours.kernelName, 'webgpu');
  }
}

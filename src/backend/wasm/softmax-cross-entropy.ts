/**
 * Implements: `GptHybridSoftmaxCrossEntropy`, a kernel the wasm backend lacks: for the LM head's
 * logits laid out transposed, logitsT [V, cols] (cols a multiple of 4; column r is row r's logits),
 * and int32 labels [rows] (rows <= cols; later columns are padding and get no loss), each row's
 * cross-entropy log(sum exp(x - max)) - (x[label] - max) and the gradient (softmax - onehot) *
 * gradScale in both layouts: dLogits [cols, V] and dLogitsT [V, cols]. src/model/manual/primitives.ts
 * (lmHeadCrossEntropy) uses it, and falls back to tf ops on other backends.
 *
 * Why: the loss was seven stock kernels over [rows, V] (max, sub, exp, sum, gather, div, and the
 * one-hot's terms over [V, H]); on the tiny model (vocab 50304, 252 rows) Exp alone took 80-100 ms
 * and the rest 30 ms of a ~400 ms step. One SIMD pass set (simd-module.ts) takes ~35 ms. The
 * transposed layout is for the matmuls around it: xnnpack repacks its right operand on every call
 * (12-20 ms for a [50304, 64] one), so the head keeps the big operands on the left: logitsT = W X^T,
 * dW = dLogitsT X and dX = dLogits W, which no longer transpose or repack anything of size V x rows.
 */
import type { KernelConfig, KernelFunc, TensorInfo } from '../../tf.ts';
import { SOFTMAX_CROSS_ENTROPY } from '../kernel-names.ts';
import { asWasmBackend, heapView, tensorData } from './heap.ts';
import { simdModule } from './simd-module.ts';

const softmaxCrossEntropyKernel: KernelFunc = (args) => {
  const backend = asWasmBackend(args.backend, SOFTMAX_CROSS_ENTROPY);
  const { logitsT, labels } = args.inputs;
  const gradScale = args.attrs?.['gradScale'];
  if (logitsT === undefined || labels === undefined || typeof gradScale !== 'number') {
    throw new Error(`${SOFTMAX_CROSS_ENTROPY}: expected inputs 'logitsT' and 'labels' and a numeric attr 'gradScale', ` +
      `got inputs [${Object.keys(args.inputs)}] and gradScale=${String(gradScale)}.`);
  }
  if (logitsT.dtype !== 'float32' || logitsT.shape.length !== 2 || logitsT.shape[1]! % 4 !== 0 ||
      labels.dtype !== 'int32' || labels.shape.length !== 1 || labels.shape[0]! > logitsT.shape[1]!) {
    throw new Error(`${SOFTMAX_CROSS_ENTROPY}: needs float32 logitsT [V, cols] with cols a multiple of 4 and int32 ` +
      `labels [rows <= cols]; got ${logitsT.dtype} [${logitsT.shape}] and ${labels.dtype} [${labels.shape}] ` +
      '(pad the rows to a multiple of 4).');
  }
  const [vocab, cols] = logitsT.shape as [number, number];
  const rows = labels.shape[0]!;
  const losses = backend.makeOutput([rows], 'float32');
  const dLogits = backend.makeOutput([cols, vocab], 'float32');
  const dLogitsT = backend.makeOutput([vocab, cols], 'float32');
  const stats = backend.makeOutput([2, cols], 'float32');
  try {
    const offset = (tensor: TensorInfo) => tensorData(backend, tensor, SOFTMAX_CROSS_ENTROPY).memoryOffset;
    if (vocab > 0 && cols > 0) {
      simdModule(backend).softmaxColumns(offset(logitsT), offset(dLogits), offset(dLogitsT), vocab, cols, gradScale, offset(stats), offset(stats) + 4 * cols);
    }
    // Views only after the last allocation (heap.ts).
    const x = heapView(backend, 'float32', offset(logitsT), vocab * cols);
    const d = heapView(backend, 'float32', offset(dLogits), vocab * cols);
    const dT = heapView(backend, 'float32', offset(dLogitsT), vocab * cols);
    const columnStats = heapView(backend, 'float32', offset(stats), 2 * cols);
    const rowLabels = heapView(backend, 'int32', offset(labels), rows);
    const out = heapView(backend, 'float32', offset(losses), rows);
    const scale = Math.fround(gradScale);
    for (let r = 0; r < rows; r++) {
      const label = rowLabels[r]!;
      if (!(label >= 0 && label < vocab)) {
        throw new Error(`${SOFTMAX_CROSS_ENTROPY}: label ${label} of row ${r} is outside the vocabulary [0, ${vocab}); ` +
          'check the tokenizer\'s ids against model.vocabSize.');
      }
      const shifted = Math.fround(x[label * cols + r]! - columnStats[r]!);
      out[r] = Math.fround(Math.fround(Math.log(columnStats[cols + r]!)) - shifted);
      d[r * vocab + label] = Math.fround(d[r * vocab + label]! - scale);
      dT[label * cols + r] = Math.fround(dT[label * cols + r]! - scale);
    }
  } catch (error) {
    for (const output of [losses, dLogits, dLogitsT]) backend.disposeData(output.dataId);
    throw error;
  } finally {
    backend.disposeData(stats.dataId);
  }
  return [losses, dLogits, dLogitsT];
};

export const wasmSoftmaxCrossEntropyConfig: KernelConfig = {
  kernelName: SOFTMAX_CROSS_ENTROPY,
  backendName: 'wasm',
  kernelFunc: softmaxCrossEntropyKernel,
};

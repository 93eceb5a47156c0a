/**
 * Implements: `GptHybridSoftmaxCrossEntropy`, a kernel the wasm backend lacks: for logits [rows, V]
 * and int32 labels [rows], each row's cross-entropy log(sum exp(x - max)) - (x[label] - max) and the
 * gradient (softmax - onehot) * gradScale, in one call (src/model/manual/primitives.ts falls back to
 * tf ops on other backends).
 *
 * Why: the LM head's loss was seven stock kernels over [rows, V] (max, sub, exp, sum, gather, div,
 * and the one-hot's subtractions over [V, H]); on the tiny model (vocab 50304, 252 rows) Exp alone
 * took 80-100 ms and the rest 30 ms of a ~400 ms step. The SIMD rows of wasm-simd-module.ts do
 * the same in ~30 ms, one row at a time in cache.
 */
import type { KernelConfig, KernelFunc, TensorInfo } from '../tf.ts';
import { asWasmBackend, heapView, tensorData } from './wasm-heap.ts';
import { simdModule } from './wasm-simd-module.ts';

export const SOFTMAX_CROSS_ENTROPY = 'GptHybridSoftmaxCrossEntropy';

const softmaxCrossEntropyKernel: KernelFunc = (args) => {
  const backend = asWasmBackend(args.backend, SOFTMAX_CROSS_ENTROPY);
  const { logits, labels } = args.inputs;
  const gradScale = args.attrs?.['gradScale'];
  if (logits === undefined || labels === undefined || typeof gradScale !== 'number') {
    throw new Error(`${SOFTMAX_CROSS_ENTROPY}: expected inputs 'logits' and 'labels' and a numeric attr 'gradScale', ` +
      `got inputs [${Object.keys(args.inputs)}] and gradScale=${String(gradScale)}.`);
  }
  if (logits.dtype !== 'float32' || logits.shape.length !== 2 || labels.dtype !== 'int32' ||
      labels.shape.length !== 1 || labels.shape[0] !== logits.shape[0]) {
    throw new Error(`${SOFTMAX_CROSS_ENTROPY}: needs float32 logits [rows, V] and int32 labels [rows]; got ` +
      `${logits.dtype} [${logits.shape}] and ${labels.dtype} [${labels.shape}].`);
  }
  const [rows, vocab] = logits.shape as [number, number];
  const losses = backend.makeOutput([rows], 'float32');
  const dLogits = backend.makeOutput([rows, vocab], 'float32');
  const stats = backend.makeOutput([rows, 2], 'float32');
  try {
    const logitsOffset = tensorData(backend, logits, SOFTMAX_CROSS_ENTROPY).memoryOffset;
    const dOffset = tensorData(backend, dLogits, SOFTMAX_CROSS_ENTROPY).memoryOffset;
    const statsOffset = tensorData(backend, stats, SOFTMAX_CROSS_ENTROPY).memoryOffset;
    if (rows > 0 && vocab > 0) simdModule(backend).softmaxRows(logitsOffset, dOffset, rows, vocab, gradScale, statsOffset);
    // Views only after the last allocation (wasm-heap.ts).
    const x = heapView(backend, 'float32', logitsOffset, rows * vocab);
    const d = heapView(backend, 'float32', dOffset, rows * vocab);
    const rowStats = heapView(backend, 'float32', statsOffset, rows * 2);
    const rowLabels = heapView(backend, 'int32', tensorData(backend, labels, SOFTMAX_CROSS_ENTROPY).memoryOffset, rows);
    const out = heapView(backend, 'float32', tensorData(backend, losses, SOFTMAX_CROSS_ENTROPY).memoryOffset, rows);
    const scale = Math.fround(gradScale);
    for (let r = 0; r < rows; r++) {
      const label = rowLabels[r]!;
      if (!(label >= 0 && label < vocab)) {
        throw new Error(`${SOFTMAX_CROSS_ENTROPY}: label ${label} of row ${r} is outside the vocabulary [0, ${vocab}); ` +
          'check the tokenizer\'s ids against model.vocabSize.');
      }
      const at = r * vocab + label;
      const shifted = Math.fround(x[at]! - rowStats[2 * r]!);
      out[r] = Math.fround(Math.fround(Math.log(rowStats[2 * r + 1]!)) - shifted);
      d[at] = Math.fround(d[at]! - scale);
    }
  } catch (error) {
    backend.disposeData(losses.dataId);
    backend.disposeData(dLogits.dataId);
    throw error;
  } finally {
    backend.disposeData(stats.dataId);
  }
  return [losses, dLogits] as TensorInfo[];
};

export const wasmSoftmaxCrossEntropyConfig: KernelConfig = {
  kernelName: SOFTMAX_CROSS_ENTROPY,
  backendName: 'wasm',
  kernelFunc: softmaxCrossEntropyKernel,
};

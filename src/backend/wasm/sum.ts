/**
 * Implements: a replacement `Sum` kernel for the tfjs wasm backend for reductions over outer
 * axes, such as every bias gradient (sum of [rows, features] over rows).
 *
 * The stock kernel moves the reduced axes innermost with the stock, naive Transpose before its
 * compiled sum; profiling a GPT step showed 3 ms per [1024, 256] bias gradient, ~10 ms per
 * [1024, 1024]. This one does that transpose with the tiled kernel and then hands the
 * innermost-axes sum to the stock kernel unchanged.
 */
import { Sum, backend_util, util } from '../../tf.ts';
import type { KernelConfig, KernelFunc, TensorInfo } from '../../tf.ts';
import { asWasmBackend } from './heap.ts';
import { runStockKernel, setUpStockKernel } from './stock-kernels.ts';
import { transposeOnHeap } from './transpose.ts';

const sumKernel: KernelFunc = (args) => {
  const backend = asWasmBackend(args.backend, Sum);
  const x = args.inputs['x'];
  if (x === undefined) throw new Error(`${Sum}: expected input 'x', got [${Object.keys(args.inputs)}].`);
  const rank = x.shape.length;
  const axes = util.parseAxisParam(args.attrs?.['axis'] as number | number[], x.shape);
  const perm = backend_util.getAxesPermutation(axes, rank);
  if (perm == null || (x.dtype !== 'float32' && x.dtype !== 'int32')) return runStockKernel(Sum, args);
  const transposed = transposeOnHeap(backend, x, perm);
  if (transposed === undefined) return runStockKernel(Sum, args);
  try {
    const innermost = backend_util.getInnerMostAxes(axes.length, rank);
    const out = runStockKernel(Sum, { inputs: { x: transposed }, backend: args.backend, attrs: { axis: innermost, keepDims: false } });
    const keepDims = Boolean(args.attrs?.['keepDims']);
    return keepDims ? { ...out, shape: backend_util.expandShapeToKeepDim(out.shape, axes) } as TensorInfo : out;
  } finally {
    backend.disposeData(transposed.dataId);
  }
};

export const wasmSumConfig: KernelConfig = {
  kernelName: Sum,
  backendName: 'wasm',
  kernelFunc: sumKernel,
  // The engine runs this at every setBackend('wasm'); it keeps the stock kernel usable.
  setupFunc: (backend) => setUpStockKernel(Sum, backend),
};

/**
 * Implements: `GptHybridSumOfSquares`, a kernel the wasm backend lacks: for tensors '0', '1', ... one
 * float32 [n] tensor of their sums of squares (the global gradient norm's parts; src/train/optimizer.ts
 * sumOfSquares falls back to tf ops on other backends). Squares are float32, so an overflow still shows
 * as Infinity (the mixed-precision step skips on it); the sums run in float64.
 *
 * Why: square + sum per gradient, then a stack, was ~105 kernels for the tiny model's 52 parameters:
 * 9-14 ms of a ~240 ms step, mostly dispatch; this is one call and one pass over 3.4M floats (~1 ms).
 */
import type { KernelConfig, KernelFunc, TensorInfo } from '../../tf.ts';
import { SUM_OF_SQUARES } from '../kernel-names.ts';
import { asWasmBackend, heapView, sizeOf, tensorData } from './heap.ts';
import { simdModule } from './simd-module.ts';

const sumOfSquaresKernel: KernelFunc = (args) => {
  const backend = asWasmBackend(args.backend, SUM_OF_SQUARES);
  const tensors: TensorInfo[] = [];
  for (let i = 0; args.inputs[String(i)] !== undefined; i++) tensors.push(args.inputs[String(i)]!);
  if (tensors.length !== Object.keys(args.inputs).length || tensors.some((t) => t.dtype !== 'float32')) {
    throw new Error(`${SUM_OF_SQUARES}: expected float32 inputs named 0..n-1, got ` +
      `[${Object.entries(args.inputs).map(([name, t]) => `${name}: ${t?.dtype}`).join(', ')}].`);
  }
  const out = backend.makeOutput([tensors.length], 'float32');
  const simd = simdModule(backend);
  const sums = tensors.map((t) => simd.sumOfSquares(tensorData(backend, t, SUM_OF_SQUARES).memoryOffset, sizeOf(t.shape)));
  heapView(backend, 'float32', tensorData(backend, out, SUM_OF_SQUARES).memoryOffset, tensors.length).set(sums);
  return out;
};

export const wasmSumOfSquaresConfig: KernelConfig = {
  kernelName: SUM_OF_SQUARES,
  backendName: 'wasm',
  kernelFunc: sumOfSquaresKernel,
};

/**
 * Implements: `GptHybridSumOfSquares` on webgpu: for float32 tensors '0', '1', ... one float32 [n]
 * tensor of their sums of squares (the contract of wasm/sum-of-squares.ts; optimizer.ts sumOfSquares,
 * the global gradient norm's parts).
 *
 * Why: square + sum per tensor, then a stack, is 2n + 1 ops (105 for the tiny model's 52 gradients);
 * this is one dispatch per group of tensors, all writing into the one output: a shader binds at
 * most maxStorageBuffersPerShaderStage buffers (8 unless the device asked for more), the output one of
 * them. One workgroup sums each tensor, in float32 (the fallback's tf.sum sums float32 squares too).
 */
import type { KernelConfig, KernelFunc, TensorInfo } from '../../tf.ts';
import { SUM_OF_SQUARES } from '../kernel-names.ts';
import { asWebgpuBackend, runProgram, type Scalar, type WebgpuProgram } from './program.ts';

const THREADS = 256;

/** Sums of squares of `count` bound tensors t0.., written at result[first + i]. */
function groupProgram(n: number, count: number, first: number, sizes: number[]): WebgpuProgram {
  const names = Array.from({ length: count }, (_, i) => `t${i}`);
  const scalars: Scalar[] = [
    { name: 'first', type: 'i32', value: first },
    ...sizes.map((size, i): Scalar => ({ name: `size${i}`, type: 'i32', value: size })),
  ];
  const cases = names.map((name, i) => `
          case ${i}: {
            for (var j = tid; j < uniforms.size${i}; j += ${THREADS}) {
              let value = ${name}[j];
              partial += value * value;
            }
          }`).join('');
  return {
    variableNames: names,
    outputShape: [n],
    shaderKey: 'gptSumOfSquares',
    dispatchLayout: { x: [0] },
    dispatch: [count, 1, 1],
    workgroupSize: [THREADS, 1, 1],
    uniforms: scalars.map(({ name, type }) => `${name} : ${type}, `).join(''),
    scalars,
    getUserCode: () => `
      var<workgroup> partials : array<f32, ${THREADS}>;
      fn main(index : i32) {
        let which = i32(workgroupId.x);
        let tid = i32(localId.x);
        var partial = 0.0;
        switch which {${cases}
          default: {}
        }
        partials[tid] = partial;
        workgroupBarrier();
        for (var stride = ${THREADS / 2}; stride > 0; stride = stride >> 1u) {
          if (tid < stride) {
            partials[tid] = partials[tid] + partials[tid + stride];
          }
          workgroupBarrier();
        }
        if (tid == 0) {
          result[uniforms.first + which] = partials[0];
        }
      }`,
  };
}

const sumOfSquaresKernel: KernelFunc = (args) => {
  const backend = asWebgpuBackend(args.backend, SUM_OF_SQUARES);
  const tensors: TensorInfo[] = [];
  for (let i = 0; args.inputs[String(i)] !== undefined; i++) tensors.push(args.inputs[String(i)]!);
  if (tensors.length !== Object.keys(args.inputs).length || tensors.some((t) => t.dtype !== 'float32')) {
    throw new Error(`${SUM_OF_SQUARES}: expected float32 inputs named 0..n-1, got ` +
      `[${Object.entries(args.inputs).map(([name, t]) => `${name}: ${t?.dtype}`).join(', ')}].`);
  }
  const n = tensors.length;
  const sizes = tensors.map((t) => t.shape.reduce((product, dim) => product * dim, 1));
  const out = backend.makeTensorInfo([n], 'float32');
  if (n === 0) return out;
  // An empty tensor cannot be bound (a zero-size binding): another tensor stands in, read for 0 elements.
  const stand = tensors[sizes.findIndex((size) => size > 0)];
  const scratch = stand === undefined ? backend.makeTensorInfo([1], 'float32') : undefined;
  const perGroup = Math.max(1, backend.device.limits.maxStorageBuffersPerShaderStage - 1);
  try {
    for (let first = 0; first < n; first += perGroup) {
      const count = Math.min(perGroup, n - first);
      const bound = tensors.slice(first, first + count).map((t, i) => (sizes[first + i]! > 0 ? t : (stand ?? scratch!)));
      runProgram(backend, groupProgram(n, count, first, sizes.slice(first, first + count)), bound, 'float32', out);
    }
  } finally {
    if (scratch !== undefined) backend.disposeData(scratch.dataId);
  }
  return out;
};

export const webgpuSumOfSquaresConfig: KernelConfig = { kernelName: SUM_OF_SQUARES, backendName: 'webgpu', kernelFunc: sumOfSquaresKernel };

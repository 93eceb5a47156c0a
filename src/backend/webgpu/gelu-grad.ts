/**
 * Implements: `GptHybridGeluGrad` on webgpu: dy * (0.5 (1 + t) + 0.5 x (1 - t^2) C (1 + 3 A x^2)) from
 * dy, x and the forward's tanh t (the contract of wasm/gelu.ts; primitives.ts geluBackward), in the
 * fallback's float32 order.
 *
 * Why: the tf-op form is 12 ops; this is one element-wise dispatch.
 */
import type { KernelConfig, KernelFunc } from '../../tf.ts';
import { GELU_GRAD, GELU_GRAD_RECOMPUTE } from '../kernel-names.ts';
import { GELU_INNER_TANH, STABLE_TANH } from './gelu.ts';
import { asWebgpuBackend, elementwiseProgram, f32, runProgram } from './program.ts';

const GELU_C = Math.sqrt(2 / Math.PI);
const GELU_A = 0.044715;

/** WGSL: dx from dy at `index`, `v` = x and `t` its tanh. */
const LOCAL_SLOPE = `
    let innerSlope = v * v * ${f32(3 * GELU_A * GELU_C)} + ${f32(GELU_C)};
    let local = t * 0.5 + 0.5 + v * 0.5 * (1.0 - t * t) * innerSlope;
    result[index] = dy[index] * local;`;

const geluGradKernel: KernelFunc = (args) => {
  const backend = asWebgpuBackend(args.backend, GELU_GRAD);
  const { dy, x, tanh } = args.inputs;
  if (dy === undefined || x === undefined || tanh === undefined || [dy, x, tanh].some((t) => t.dtype !== 'float32' || t.shape.join() !== dy.shape.join())) {
    throw new Error(`${GELU_GRAD}: expected float32 inputs 'dy', 'x', 'tanh' of one shape, got [${Object.entries(args.inputs).map(([name, t]) => `${name}: ${t?.dtype} [${t?.shape}]`).join(', ')}].`);
  }
  return runProgram(backend, elementwiseProgram('gptGeluGrad', ['dy', 'x', 'tanh'], dy.shape, `
    let v = x[index];
    let t = tanh[index];
    ${LOCAL_SLOPE}`), [dy, x, tanh], 'float32');
};

/** The same from dy and x alone, the tanh recomputed as gelu.ts computes it (`GptHybridGeluGradRecompute`). */
const geluGradRecomputeKernel: KernelFunc = (args) => {
  const backend = asWebgpuBackend(args.backend, GELU_GRAD_RECOMPUTE);
  const { dy, x } = args.inputs;
  if (dy === undefined || x === undefined || [dy, x].some((t) => t.dtype !== 'float32' || t.shape.join() !== dy.shape.join())) {
    throw new Error(`${GELU_GRAD_RECOMPUTE}: expected float32 inputs 'dy', 'x' of one shape, got [${Object.entries(args.inputs).map(([name, t]) => `${name}: ${t?.dtype} [${t?.shape}]`).join(', ')}].`);
  }
  const program = elementwiseProgram('gptGeluGradRecompute', ['dy', 'x'], dy.shape, `
    let v = x[index];
    let t = ${GELU_INNER_TANH};
    ${LOCAL_SLOPE}`);
  return runProgram(backend, { ...program, getUserCode: () => STABLE_TANH + program.getUserCode() }, [dy, x], 'float32');
};

export const webgpuGeluGradConfig: KernelConfig = { kernelName: GELU_GRAD, backendName: 'webgpu', kernelFunc: geluGradKernel };
export const webgpuGeluGradRecomputeConfig: KernelConfig = { kernelName: GELU_GRAD_RECOMPUTE, backendName: 'webgpu', kernelFunc: geluGradRecomputeKernel };

/**
 * Implements: `GptHybridGelu` on webgpu: GELU (tanh form) of x returning y and the tanh it used (the
 * contract of wasm/gelu.ts; primitives.ts geluForward), in the fallback's float32 order.
 *
 * Why: the tf-op form is 9 ops; this is two element-wise dispatches (tanh, then y from it), or one
 * for y alone where the backward recomputes the tanh (`GptHybridGeluY`, with gelu-grad.ts).
 *
 * tanh is our own rather than WGSL's: drivers lower the builtin as (e^2x - 1) / (e^2x + 1) with
 * differing care for large |x| (an infinity over an infinity) and for small |x| (cancellation).
 */
import type { KernelConfig, KernelFunc } from '../../tf.ts';
import { GELU, GELU_Y } from '../kernel-names.ts';
import { asWebgpuBackend, elementwiseProgram, f32, runProgram } from './program.ts';

const GELU_C = Math.sqrt(2 / Math.PI);
const GELU_A = 0.044715;

/**
 * Within a few float32 ulps of tanh everywhere: the odd Taylor series to x^7 below 0.125 (its error
 * there is under 2^-30 relative), else 1 - 2 / (e^2|x| + 1) from exp(-2|x|), which cannot overflow.
 */
export const STABLE_TANH = `
  fn stableTanh(v : f32) -> f32 {
    let a = abs(v);
    if (a < 0.125) {
      let v2 = v * v;
      return v * (1.0 + v2 * (-1.0 / 3.0 + v2 * (2.0 / 15.0 - v2 * (17.0 / 315.0))));
    }
    let e = exp(-2.0 * a);
    return sign(v) * ((1.0 - e) / (1.0 + e));
  }`;

/** WGSL: the tanh GELU uses at `v` (x[index]), the expression the backward recomputes (gelu-grad.ts). */
export const GELU_INNER_TANH = `stableTanh((v + v * v * v * ${f32(GELU_A)}) * ${f32(GELU_C)})`;

const geluKernel: KernelFunc = (args) => {
  const backend = asWebgpuBackend(args.backend, GELU);
  const { x } = args.inputs;
  if (x === undefined || x.dtype !== 'float32') throw new Error(`${GELU}: expected a float32 input 'x', got [${Object.keys(args.inputs)}] (${x?.dtype}).`);
  const tanhProgram = elementwiseProgram('gptGeluTanh', ['x'], x.shape, `
    let v = x[index];
    result[index] = ${GELU_INNER_TANH};`);
  const withTanh = { ...tanhProgram, getUserCode: () => STABLE_TANH + tanhProgram.getUserCode() };
  const tanh = runProgram(backend, withTanh, [x], 'float32');
  const y = runProgram(backend, elementwiseProgram('gptGeluApply', ['x', 'tanh'], x.shape, `
    result[index] = x[index] * 0.5 * (tanh[index] + 1.0);`), [x, tanh], 'float32');
  return [y, tanh];
};

/** y alone, its tanh not kept: one dispatch; the backward recomputes the tanh (`GptHybridGeluY`). */
const geluYKernel: KernelFunc = (args) => {
  const backend = asWebgpuBackend(args.backend, GELU_Y);
  const { x } = args.inputs;
  if (x === undefined || x.dtype !== 'float32') throw new Error(`${GELU_Y}: expected a float32 input 'x', got [${Object.keys(args.inputs)}] (${x?.dtype}).`);
  const program = elementwiseProgram('gptGeluY', ['x'], x.shape, `
    let v = x[index];
    result[index] = v * 0.5 * (${GELU_INNER_TANH} + 1.0);`);
  return runProgram(backend, { ...program, getUserCode: () => STABLE_TANH + program.getUserCode() }, [x], 'float32');
};

export const webgpuGeluConfig: KernelConfig = { kernelName: GELU, backendName: 'webgpu', kernelFunc: geluKernel };
export const webgpuGeluYConfig: KernelConfig = { kernelName: GELU_Y, backendName: 'webgpu', kernelFunc: geluYKernel };

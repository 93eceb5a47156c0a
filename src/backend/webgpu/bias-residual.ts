/**
 * Implements: `GptHybridBiasResidual` on webgpu: a row-parallel linear's output y [rows, h] given its
 * bias [h] and added to the residual stream x [rows, h]: x + (y + bias), the tf ops' order
 * (primitives.ts addBiasToResidual).
 *
 * Why: two dispatches as tf ops, one here; a block has two such sums (after attention and after the
 * MLP), where the bias can only come after the matmul's all-reduce.
 */
import type { KernelConfig, KernelFunc } from '../../tf.ts';
import { BIAS_RESIDUAL } from '../kernel-names.ts';
import { asWebgpuBackend, elementwiseProgram, runProgram } from './program.ts';

const biasResidualKernel: KernelFunc = (args) => {
  const backend = asWebgpuBackend(args.backend, BIAS_RESIDUAL);
  const { x, y, bias } = args.inputs;
  if (x === undefined || y === undefined || bias === undefined) {
    throw new Error(`${BIAS_RESIDUAL}: expected inputs 'x', 'y', 'bias', got [${Object.keys(args.inputs)}].`);
  }
  const h = x.shape[1];
  if (x.shape.length !== 2 || y.shape.join() !== x.shape.join() || bias.shape.join() !== `${h}` || [x, y, bias].some((t) => t.dtype !== 'float32')) {
    throw new Error(`${BIAS_RESIDUAL}: needs float32 x and y [rows, h] and bias [h], got [${x.shape}], [${y.shape}], [${bias.shape}].`);
  }
  return runProgram(backend, elementwiseProgram('gptBiasResidual', ['x', 'y', 'bias'], x.shape, `
    result[index] = x[index] + (y[index] + bias[index % uniforms.biasShape]);`), [x, y, bias], 'float32');
};

export const webgpuBiasResidualConfig: KernelConfig = { kernelName: BIAS_RESIDUAL, backendName: 'webgpu', kernelFunc: biasResidualKernel };

/**
 * Implements: `GptHybridLayerNorm` on webgpu: LayerNorm over the last axis of x [rows, h] returning
 * y, xhat and rstd [rows, 1] (the contract of wasm/layer-norm.ts; primitives.ts layerNormForward).
 *
 * Why: the tf-op form is 8 ops (moments' mean, squared difference and mean, add, rsqrt, sub, mul, mul,
 * add), each an engine op and a dispatch; this is three dispatches (one per output): rstd and xhat
 * by one workgroup per row, y element-wise from xhat, in the fallback's order (y = xhat * gamma + beta).
 */
import type { KernelConfig, KernelFunc } from '../../tf.ts';
import { LAYER_NORM } from '../kernel-names.ts';
import { asWebgpuBackend, elementwiseProgram, rowProgram, runProgram, type Reduce } from './program.ts';

/** Each thread's share of the row's mean, summed over the workgroup (x [rows, h] is bound as `x`). */
const rowMean = (reduce: Reduce) => `
  let h = uniforms.xShape.y;
  var partial = 0.0;
  for (var c = tid; valid && c < h; c += threads) {
    partial += x[row * h + c];
  }
  ${reduce('sum', 'partial')}
  let mean = sum / f32(h);`;

const layerNormKernel: KernelFunc = (args) => {
  const backend = asWebgpuBackend(args.backend, LAYER_NORM);
  const { x, gamma, beta } = args.inputs;
  const epsilon = args.attrs?.['epsilon'];
  if (x === undefined || gamma === undefined || beta === undefined || typeof epsilon !== 'number') {
    throw new Error(`${LAYER_NORM}: expected inputs 'x', 'gamma', 'beta' and a numeric attr 'epsilon', got [${Object.keys(args.inputs)}] and epsilon=${String(epsilon)}.`);
  }
  const [rows, h] = x.shape as [number, number];
  if (x.shape.length !== 2 || gamma.shape.join() !== `${h}` || beta.shape.join() !== `${h}` || [x, gamma, beta].some((t) => t.dtype !== 'float32')) {
    throw new Error(`${LAYER_NORM}: needs float32 x [rows, h], gamma [h] and beta [h], got x [${x.shape}], gamma [${gamma.shape}], beta [${beta.shape}].`);
  }
  const rstd = runProgram(backend, rowProgram('gptLayerNormRstd', ['x'], [rows, 1], rows, h, (reduce) => `${rowMean(reduce)}
    var squares = 0.0;
    for (var c = tid; valid && c < h; c += threads) {
      let centered = x[row * h + c] - mean;
      squares += centered * centered;
    }
    ${reduce('sumOfSquares', 'squares')}
    let variance = sumOfSquares / f32(h);
    if (valid && tid == 0) {
      result[row] = inverseSqrt(variance + uniforms.epsilon);
    }`, [{ name: 'epsilon', type: 'f32', value: epsilon }]), [x], 'float32');
  const xhat = runProgram(backend, rowProgram('gptLayerNormXhat', ['x', 'rstd'], [rows, h], rows, h, (reduce) => `${rowMean(reduce)}
    for (var c = tid; valid && c < h; c += threads) {
      result[row * h + c] = (x[row * h + c] - mean) * rstd[row];
    }`), [x, rstd], 'float32');
  const y = runProgram(backend, elementwiseProgram('gptLayerNormScale', ['xhat', 'gamma', 'beta'], [rows, h], `
    let c = index % uniforms.gammaShape;
    result[index] = xhat[index] * gamma[c] + beta[c];`), [xhat, gamma, beta], 'float32');
  return [y, xhat, rstd];
};

export const webgpuLayerNormConfig: KernelConfig = { kernelName: LAYER_NORM, backendName: 'webgpu', kernelFunc: layerNormKernel };

/**
 * Implements: `GptHybridLayerNormGrad` on webgpu: from dy and xhat [rows, h], rstd [rows, 1] and gamma
 * [h], dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * gamma, dgamma = sum(dy * xhat)
 * and dbeta = sum(dy) over rows (the contract of wasm/layer-norm.ts; primitives.ts layerNormBackward).
 *
 * Why: the tf-op form is 11 ops; this is three dispatches: dx by one workgroup per row, dgamma and
 * dbeta by a column-sum shader each (column-sums.ts).
 */
import type { KernelConfig, KernelFunc } from '../../tf.ts';
import { LAYER_NORM_GRAD } from '../kernel-names.ts';
import { columnSumProgram } from './column-sums.ts';
import { asWebgpuBackend, rowProgram, runProgram } from './program.ts';

const layerNormGradKernel: KernelFunc = (args) => {
  const backend = asWebgpuBackend(args.backend, LAYER_NORM_GRAD);
  const { dy, xhat, rstd, gamma } = args.inputs;
  if (dy === undefined || xhat === undefined || rstd === undefined || gamma === undefined) {
    throw new Error(`${LAYER_NORM_GRAD}: expected inputs 'dy', 'xhat', 'rstd', 'gamma', got [${Object.keys(args.inputs)}].`);
  }
  const [rows, h] = dy.shape as [number, number];
  if (dy.shape.length !== 2 || xhat.shape.join() !== dy.shape.join() || rstd.shape.join() !== `${rows},1` || gamma.shape.join() !== `${h}` ||
      [dy, xhat, rstd, gamma].some((t) => t.dtype !== 'float32')) {
    throw new Error(`${LAYER_NORM_GRAD}: needs float32 dy and xhat [rows, h], rstd [rows, 1], gamma [h], got [${dy.shape}], [${xhat.shape}], [${rstd.shape}], [${gamma.shape}].`);
  }
  const dx = runProgram(backend, rowProgram('gptLayerNormGradDx', ['dy', 'xhat', 'rstd', 'gamma'], [rows, h], rows, h, (reduce) => `
    let h = uniforms.gammaShape;
    var sumG = 0.0;
    var sumGXhat = 0.0;
    for (var c = tid; valid && c < h; c += threads) {
      let g = dy[row * h + c] * gamma[c];
      sumG += g;
      sumGXhat += g * xhat[row * h + c];
    }
    ${reduce('totalG', 'sumG')}
    ${reduce('totalGXhat', 'sumGXhat')}
    let meanG = totalG / f32(h);
    let meanGXhat = totalGXhat / f32(h);
    for (var c = tid; valid && c < h; c += threads) {
      let i = row * h + c;
      result[i] = (dy[i] * gamma[c] - meanG - xhat[i] * meanGXhat) * rstd[row];
    }`), [dy, xhat, rstd, gamma], 'float32');
  const dgamma = runProgram(backend, columnSumProgram(rows, h, true), [dy, xhat], 'float32');
  const dbeta = runProgram(backend, columnSumProgram(rows, h, false), [dy], 'float32');
  return [dx, dgamma, dbeta];
};

export const webgpuLayerNormGradConfig: KernelConfig = { kernelName: LAYER_NORM_GRAD, backendName: 'webgpu', kernelFunc: layerNormGradKernel };

/**
 * Implements: `GptHybridLayerNormGrad` on webgpu: from dy and xhat [rows, h], rstd [rows, 1] and gamma
 * [h], dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * gamma, dgamma = sum(dy * xhat)
 * and dbeta = sum(dy) over rows (the contract of wasm/layer-norm.ts; primitives.ts layerNormBackward).
 *
 * With the gradient of the residual stream around the LayerNorm, that stream's total gradient comes
 * out as dx, the add folded into the pass (a pre-LN block's backward adds it right after).
 *
 * Why: the tf-op form is 11 ops; this is three dispatches: dx by one workgroup per row, dgamma and
 * dbeta by a column-sum shader each (column-sums.ts).
 */
import type { KernelConfig, KernelFunc } from '../../tf.ts';
import { LAYER_NORM_GRAD, LAYER_NORM_GRAD_RESIDUAL } from '../kernel-names.ts';
import { columnSumProgram } from './column-sums.ts';
import { asWebgpuBackend, rowProgram, runProgram } from './program.ts';

/** With `residual`, dx comes out with the residual stream's gradient added (`GptHybridLayerNormGradResidual`). */
const layerNormGrad = (withResidual: boolean): KernelFunc => (args) => {
  const kernel = withResidual ? LAYER_NORM_GRAD_RESIDUAL : LAYER_NORM_GRAD;
  const backend = asWebgpuBackend(args.backend, kernel);
  const { dy, xhat, rstd, gamma, residual } = args.inputs;
  if (dy === undefined || xhat === undefined || rstd === undefined || gamma === undefined) {
    throw new Error(`${kernel}: expected inputs 'dy', 'xhat', 'rstd', 'gamma', got [${Object.keys(args.inputs)}].`);
  }
  if (withResidual && (residual === undefined || residual.shape.join() !== dy.shape.join() || residual.dtype !== 'float32')) {
    throw new Error(`${kernel}: needs a float32 input 'residual' shaped like dy [${dy.shape}], got ${residual === undefined ? 'none' : `${residual.dtype} [${residual.shape}]`}.`);
  }
  const [rows, h] = dy.shape as [number, number];
  if (dy.shape.length !== 2 || xhat.shape.join() !== dy.shape.join() || rstd.shape.join() !== `${rows},1` || gamma.shape.join() !== `${h}` ||
      [dy, xhat, rstd, gamma].some((t) => t.dtype !== 'float32')) {
    throw new Error(`${kernel}: needs float32 dy and xhat [rows, h], rstd [rows, 1], gamma [h], got [${dy.shape}], [${xhat.shape}], [${rstd.shape}], [${gamma.shape}].`);
  }
  const names = ['dy', 'xhat', 'rstd', 'gamma', ...(withResidual ? ['residual'] : [])];
  const dx = runProgram(backend, rowProgram(withResidual ? 'gptLayerNormGradDxResidual' : 'gptLayerNormGradDx', names, [rows, h], rows, h, (reduce) => `
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
      let dx = (dy[i] * gamma[c] - meanG - xhat[i] * meanGXhat) * rstd[row];
      result[i] = ${withResidual ? 'residual[i] + dx' : 'dx'};
    }`), withResidual ? [dy, xhat, rstd, gamma, residual!] : [dy, xhat, rstd, gamma], 'float32');
  const dgamma = runProgram(backend, columnSumProgram(rows, h, true), [dy, xhat], 'float32');
  const dbeta = runProgram(backend, columnSumProgram(rows, h, false), [dy], 'float32');
  return [dx, dgamma, dbeta];
};

export const webgpuLayerNormGradConfig: KernelConfig = { kernelName: LAYER_NORM_GRAD, backendName: 'webgpu', kernelFunc: layerNormGrad(false) };
export const webgpuLayerNormGradResidualConfig: KernelConfig = { kernelName: LAYER_NORM_GRAD_RESIDUAL, backendName: 'webgpu', kernelFunc: layerNormGrad(true) };

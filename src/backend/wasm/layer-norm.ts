/**
 * Implements: `GptHybridLayerNorm` and `GptHybridLayerNormGrad`, kernels the wasm backend lacks:
 * LayerNorm over the last axis of rows x [rows, h] (h a multiple of 4) returning y, xhat and rstd
 * [rows, 1], and its backward returning dx, dgamma and dbeta. src/model/manual/primitives.ts uses
 * them when registered, and its tf-op formulation otherwise.
 *
 * Why: the tf-op LayerNorm is ~8 kernels forward and ~11 backward, each a dispatch (15-30 us) over a
 * few thousand floats; the tiny model runs 9 LayerNorms a step (~170 kernels, several ms). Each is
 * now one pass per row (simd-block-programs.ts).
 */
import type { KernelConfig, KernelFunc, TensorInfo } from '../../tf.ts';
import { LAYER_NORM, LAYER_NORM_GRAD } from '../kernel-names.ts';
import { asWasmBackend, tensorData } from './heap.ts';
import { simdModule } from './simd-module.ts';

function requireRows(kernel: string, named: Record<string, TensorInfo | undefined>, rows: number, h: number): void {
  for (const [name, tensor] of Object.entries(named)) {
    const wanted = name === 'gamma' || name === 'beta' ? [h] : name === 'rstd' ? [rows, 1] : [rows, h];
    if (tensor === undefined || tensor.dtype !== 'float32' || tensor.shape.join() !== wanted.join()) {
      throw new Error(`${kernel}: input '${name}' must be float32 [${wanted}], got ${tensor === undefined ? 'nothing' : `${tensor.dtype} [${tensor.shape}]`} ` +
        '(rows [rows, h] with h a multiple of 4).');
    }
  }
}

const layerNormKernel: KernelFunc = (args) => {
  const backend = asWasmBackend(args.backend, LAYER_NORM);
  const { x, gamma, beta } = args.inputs;
  const eps = args.attrs?.['epsilon'];
  const [rows, h] = (x?.shape ?? []) as [number, number];
  if (typeof eps !== 'number' || x?.shape.length !== 2 || h % 4 !== 0) {
    throw new Error(`${LAYER_NORM}: needs x [rows, h] with h a multiple of 4 and a numeric attr 'epsilon', got x [${x?.shape}] and epsilon=${String(eps)}.`);
  }
  requireRows(LAYER_NORM, { x, gamma, beta }, rows, h);
  const outs = [backend.makeOutput([rows, h], 'float32'), backend.makeOutput([rows, h], 'float32'), backend.makeOutput([rows, 1], 'float32')];
  const offset = (tensor: TensorInfo) => tensorData(backend, tensor, LAYER_NORM).memoryOffset;
  if (rows > 0 && h > 0) simdModule(backend).layerNorm(offset(x!), offset(gamma!), offset(beta!), offset(outs[0]!), offset(outs[1]!), offset(outs[2]!), rows, h, eps);
  return outs;
};

const layerNormGradKernel: KernelFunc = (args) => {
  const backend = asWasmBackend(args.backend, LAYER_NORM_GRAD);
  const { dy, xhat, rstd, gamma } = args.inputs;
  const [rows, h] = (dy?.shape ?? []) as [number, number];
  if (dy?.shape.length !== 2 || h % 4 !== 0) {
    throw new Error(`${LAYER_NORM_GRAD}: needs dy [rows, h] with h a multiple of 4, got [${dy?.shape}].`);
  }
  requireRows(LAYER_NORM_GRAD, { dy, xhat, rstd, gamma }, rows, h);
  const outs = [backend.makeOutput([rows, h], 'float32'), backend.makeOutput([h], 'float32'), backend.makeOutput([h], 'float32')];
  const offset = (tensor: TensorInfo) => tensorData(backend, tensor, LAYER_NORM_GRAD).memoryOffset;
  if (h > 0) simdModule(backend).layerNormGrad(offset(dy!), offset(xhat!), offset(rstd!), offset(gamma!), offset(outs[0]!), offset(outs[1]!), offset(outs[2]!), rows, h);
  return outs;
};

export const wasmLayerNormConfig: KernelConfig = { kernelName: LAYER_NORM, backendName: 'wasm', kernelFunc: layerNormKernel };
export const wasmLayerNormGradConfig: KernelConfig = { kernelName: LAYER_NORM_GRAD, backendName: 'wasm', kernelFunc: layerNormGradKernel };

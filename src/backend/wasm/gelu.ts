/**
 * Implements: `GptHybridGelu` and `GptHybridGeluGrad`, kernels the wasm backend lacks: GELU (tanh
 * form) returning y and the tanh it used, and its backward from x and that tanh.
 * src/model/manual/primitives.ts uses them when registered, and its tf-op formulation otherwise.
 *
 * Why: the tf-op GELU is 9 kernels forward and 12 backward (stock Tanh alone ~9 ns an element); the
 * tiny model runs 4 a step, ~85 dispatches and a few ms. Each is now one SIMD pass
 * (simd-block-programs.ts; tanh from the kernels' exp, within ~1e-7).
 */
import type { KernelConfig, KernelFunc, TensorInfo } from '../../tf.ts';
import { GELU, GELU_GRAD } from '../kernel-names.ts';
import { asWasmBackend, sizeOf, tensorData } from './heap.ts';
import { simdModule } from './simd-module.ts';

function requireLike(kernel: string, like: TensorInfo, named: Record<string, TensorInfo | undefined>): void {
  for (const [name, tensor] of Object.entries(named)) {
    if (tensor === undefined || tensor.dtype !== 'float32' || tensor.shape.join() !== like.shape.join()) {
      throw new Error(`${kernel}: input '${name}' must be float32 [${like.shape}], got ${tensor === undefined ? 'nothing' : `${tensor.dtype} [${tensor.shape}]`}.`);
    }
  }
}

const geluKernel: KernelFunc = (args) => {
  const backend = asWasmBackend(args.backend, GELU);
  const { x } = args.inputs;
  if (x === undefined) throw new Error(`${GELU}: expected input 'x', got [${Object.keys(args.inputs)}].`);
  requireLike(GELU, x, { x });
  const outs = [backend.makeOutput(x.shape, 'float32'), backend.makeOutput(x.shape, 'float32')];
  const offset = (tensor: TensorInfo) => tensorData(backend, tensor, GELU).memoryOffset;
  simdModule(backend).gelu(offset(x), offset(outs[0]!), offset(outs[1]!), sizeOf(x.shape));
  return outs;
};

const geluGradKernel: KernelFunc = (args) => {
  const backend = asWasmBackend(args.backend, GELU_GRAD);
  const { dy, x, tanh } = args.inputs;
  if (dy === undefined) throw new Error(`${GELU_GRAD}: expected inputs 'dy', 'x', 'tanh', got [${Object.keys(args.inputs)}].`);
  requireLike(GELU_GRAD, dy, { dy, x, tanh });
  const out = backend.makeOutput(dy.shape, 'float32');
  const offset = (tensor: TensorInfo) => tensorData(backend, tensor, GELU_GRAD).memoryOffset;
  simdModule(backend).geluGrad(offset(dy), offset(x!), offset(tanh!), offset(out), sizeOf(dy.shape));
  return out;
};

export const wasmGeluConfig: KernelConfig = { kernelName: GELU, backendName: 'wasm', kernelFunc: geluKernel };
export const wasmGeluGradConfig: KernelConfig = { kernelName: GELU_GRAD, backendName: 'wasm', kernelFunc: geluGradKernel };

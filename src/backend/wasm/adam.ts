/**
 * Implements: `GptHybridAdamUpdate`, a kernel the wasm backend lacks: one Adam/AdamW step of a
 * parameter from its gradient and both moments, returning the new parameter and moments
 * (src/train/optimizer.ts falls back to tf ops on other backends).
 *
 * Why: the tf-op update is ~14 kernels per parameter, each a pass over memory with a fresh output;
 * on wasm they took 52 ms for the 50304 x 64 word embedding alone, ~40 ms of the tiny model's step.
 * This is one SIMD pass (simd-module.ts), with the same float32 operations in the same order,
 * so it gives the same bits as the ops it replaces (test/backend/adam.test.ts checks it).
 */
import type { KernelConfig, KernelFunc, TensorInfo } from '../../tf.ts';
import { ADAM_UPDATE, type AdamUpdateAttrs } from '../kernel-names.ts';
import { asWasmBackend, sizeOf, tensorData } from './heap.ts';
import { simdModule } from './simd-module.ts';

const ATTR_NAMES: ReadonlyArray<keyof AdamUpdateAttrs> = [
  'clip', 'l2', 'decay', 'beta1', 'oneMinusBeta1', 'beta2', 'oneMinusBeta2', 'sqrtBiasCorrection2', 'eps', 'stepSize',
];

const adamUpdateKernel: KernelFunc = (args) => {
  const backend = asWasmBackend(args.backend, ADAM_UPDATE);
  const { param, grad, m, v } = args.inputs;
  if (param === undefined || grad === undefined || m === undefined || v === undefined) {
    throw new Error(`${ADAM_UPDATE}: expected inputs 'param', 'grad', 'm', 'v', got [${Object.keys(args.inputs)}].`);
  }
  const scalars = ATTR_NAMES.map((name) => args.attrs?.[name]);
  if (scalars.some((value) => typeof value !== 'number')) {
    throw new Error(`${ADAM_UPDATE}: attrs ${ATTR_NAMES.join(', ')} must all be numbers, got ${JSON.stringify(args.attrs)}.`);
  }
  for (const [name, tensor] of Object.entries({ grad, m, v })) {
    if (tensor.dtype !== 'float32' || tensor.shape.join() !== param.shape.join()) {
      throw new Error(`${ADAM_UPDATE}: ${name} is ${tensor.dtype} [${tensor.shape}]; it must be float32 shaped like the parameter [${param.shape}].`);
    }
  }
  if (param.dtype !== 'float32') throw new Error(`${ADAM_UPDATE}: the parameter must be float32, got ${param.dtype}.`);
  const outs = [param, m, v].map((like) => backend.makeOutput(like.shape, 'float32'));
  const size = sizeOf(param.shape);
  if (size > 0) {
    const offset = (tensor: TensorInfo) => tensorData(backend, tensor, ADAM_UPDATE).memoryOffset;
    simdModule(backend).adam(
      offset(param), offset(grad), offset(m), offset(v), offset(outs[0]!), offset(outs[1]!), offset(outs[2]!), size,
      ...(scalars as [number, number, number, number, number, number, number, number, number, number]),
    );
  }
  return outs;
};

export const wasmAdamUpdateConfig: KernelConfig = {
  kernelName: ADAM_UPDATE,
  backendName: 'wasm',
  kernelFunc: adamUpdateKernel,
};

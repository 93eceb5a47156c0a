/**
 * Implements: `GptHybridAdamUpdatePacked` on webgpu: one Adam/AdamW step of a parameter from its
 * gradient and its moments packed as one tensor [2, ...shape] (m then v), returning the new parameter
 * and the new packed moments (src/train/optimizer.ts), with the fallback's float32 operations in its
 * order.
 *
 * Why packed: a WebGPU program writes one output, so separate moments cost a dispatch each; packed,
 * both come from one dispatch (the invocations of the first half write m, the second half v), and the
 * parameter from a second one that reads the moments the first has written. Two dispatches per
 * parameter where unpacked moments needed three, and the tf-op update 10-14 ops.
 */
import type { KernelConfig, KernelFunc } from '../../tf.ts';
import { ADAM_UPDATE_PACKED, type AdamUpdateAttrs } from '../kernel-names.ts';
import { asWebgpuBackend, elementwiseProgram, runProgram } from './program.ts';

const ATTR_NAMES: ReadonlyArray<keyof AdamUpdateAttrs> = [
  'clip', 'l2', 'decay', 'beta1', 'oneMinusBeta1', 'beta2', 'oneMinusBeta2', 'sqrtBiasCorrection2', 'eps', 'stepSize',
];

const adamUpdateKernel: KernelFunc = (args) => {
  const backend = asWebgpuBackend(args.backend, ADAM_UPDATE_PACKED);
  const { param, grad, moments } = args.inputs;
  if (param === undefined || grad === undefined || moments === undefined) {
    throw new Error(`${ADAM_UPDATE_PACKED}: expected inputs 'param', 'grad', 'moments', got [${Object.keys(args.inputs)}].`);
  }
  const attrs = args.attrs as Partial<Record<keyof AdamUpdateAttrs, unknown>> | undefined;
  if (ATTR_NAMES.some((name) => typeof attrs?.[name] !== 'number')) {
    throw new Error(`${ADAM_UPDATE_PACKED}: attrs ${ATTR_NAMES.join(', ')} must all be numbers, got ${JSON.stringify(args.attrs)}.`);
  }
  const a = attrs as AdamUpdateAttrs;
  const packedShape = [2, ...param.shape];
  for (const [name, tensor, shape] of [['param', param, param.shape], ['grad', grad, param.shape], ['moments', moments, packedShape]] as const) {
    if (tensor.dtype !== 'float32' || tensor.shape.join() !== shape.join()) {
      throw new Error(`${ADAM_UPDATE_PACKED}: ${name} is ${tensor.dtype} [${tensor.shape}]; it must be float32 [${shape}] (the parameter is [${param.shape}]).`);
    }
  }
  const size = param.shape.reduce((product, dim) => product * dim, 1);
  // `index` runs over both halves; `at` is the element of the parameter it belongs to.
  const nextMoments = runProgram(backend, elementwiseProgram('gptAdamMoments', ['param', 'grad', 'moments'], packedShape, `
    let second = index >= uniforms.half;
    let at = select(index, index - uniforms.half, second);
    let g = grad[at] * uniforms.clip + param[at] * uniforms.l2;
    let update = select(g, g * g, second);
    result[index] = moments[index] * select(uniforms.beta1, uniforms.beta2, second) + update * select(uniforms.oneMinusBeta1, uniforms.oneMinusBeta2, second);`, [
    { name: 'half', type: 'i32', value: size },
    { name: 'clip', type: 'f32', value: a.clip },
    { name: 'l2', type: 'f32', value: a.l2 },
    { name: 'beta1', type: 'f32', value: a.beta1 },
    { name: 'oneMinusBeta1', type: 'f32', value: a.oneMinusBeta1 },
    { name: 'beta2', type: 'f32', value: a.beta2 },
    { name: 'oneMinusBeta2', type: 'f32', value: a.oneMinusBeta2 },
  ]), [param, grad, moments], 'float32');
  const nextParam = runProgram(backend, elementwiseProgram('gptAdamParam', ['param', 'moments'], param.shape, `
    let denom = sqrt(moments[index + uniforms.half]) / uniforms.sqrtBiasCorrection2 + uniforms.eps;
    result[index] = param[index] * uniforms.decay - moments[index] / denom * uniforms.stepSize;`, [
    { name: 'half', type: 'i32', value: size },
    { name: 'decay', type: 'f32', value: a.decay },
    { name: 'sqrtBiasCorrection2', type: 'f32', value: a.sqrtBiasCorrection2 },
    { name: 'eps', type: 'f32', value: a.eps },
    { name: 'stepSize', type: 'f32', value: a.stepSize },
  ]), [param, nextMoments], 'float32');
  return [nextParam, nextMoments];
};

export const webgpuAdamUpdateConfig: KernelConfig = { kernelName: ADAM_UPDATE_PACKED, backendName: 'webgpu', kernelFunc: adamUpdateKernel };

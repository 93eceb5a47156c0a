/**
 * Implements: `GptHybridAdamUpdate` on webgpu: one Adam/AdamW step of a parameter from its gradient
 * and both moments, returning the new parameter and moments (the contract of wasm/adam.ts;
 * src/train/optimizer.ts), with the fallback's float32 operations in its order.
 *
 * Why: the tf-op update is 10-14 ops per parameter (more with clipping and decay); this is three
 * dispatches, one per output: each moment from the gradient (one shader, so one pipeline), then the
 * parameter from the new moments, which the dispatches before it have written.
 */
import type { KernelConfig, KernelFunc } from '../../tf.ts';
import { ADAM_UPDATE, type AdamUpdateAttrs } from '../kernel-names.ts';
import { asWebgpuBackend, elementwiseProgram, runProgram } from './program.ts';

const ATTR_NAMES: ReadonlyArray<keyof AdamUpdateAttrs> = [
  'clip', 'l2', 'decay', 'beta1', 'oneMinusBeta1', 'beta2', 'oneMinusBeta2', 'sqrtBiasCorrection2', 'eps', 'stepSize',
];

const adamUpdateKernel: KernelFunc = (args) => {
  const backend = asWebgpuBackend(args.backend, ADAM_UPDATE);
  const { param, grad, m, v } = args.inputs;
  if (param === undefined || grad === undefined || m === undefined || v === undefined) {
    throw new Error(`${ADAM_UPDATE}: expected inputs 'param', 'grad', 'm', 'v', got [${Object.keys(args.inputs)}].`);
  }
  const attrs = args.attrs as Partial<Record<keyof AdamUpdateAttrs, unknown>> | undefined;
  if (ATTR_NAMES.some((name) => typeof attrs?.[name] !== 'number')) {
    throw new Error(`${ADAM_UPDATE}: attrs ${ATTR_NAMES.join(', ')} must all be numbers, got ${JSON.stringify(args.attrs)}.`);
  }
  const a = attrs as AdamUpdateAttrs;
  for (const [name, tensor] of Object.entries({ param, grad, m, v })) {
    if (tensor.dtype !== 'float32' || tensor.shape.join() !== param.shape.join()) {
      throw new Error(`${ADAM_UPDATE}: ${name} is ${tensor.dtype} [${tensor.shape}]; all four must be float32 shaped like the parameter [${param.shape}].`);
    }
  }
  const moment = (previous: typeof m, beta: number, oneMinusBeta: number, square: boolean) => runProgram(backend, elementwiseProgram('gptAdamMoment', ['param', 'grad', 'moment'], param.shape, `
    let g = grad[index] * uniforms.clip + param[index] * uniforms.l2;
    let update = select(g, g * g, uniforms.square == 1);
    result[index] = moment[index] * uniforms.beta + update * uniforms.oneMinusBeta;`, [
    { name: 'clip', type: 'f32', value: a.clip },
    { name: 'l2', type: 'f32', value: a.l2 },
    { name: 'beta', type: 'f32', value: beta },
    { name: 'oneMinusBeta', type: 'f32', value: oneMinusBeta },
    { name: 'square', type: 'i32', value: square ? 1 : 0 },
  ]), [param, grad, previous], 'float32');
  const nextM = moment(m, a.beta1, a.oneMinusBeta1, false);
  const nextV = moment(v, a.beta2, a.oneMinusBeta2, true);
  const nextParam = runProgram(backend, elementwiseProgram('gptAdamParam', ['param', 'm', 'v'], param.shape, `
    let denom = sqrt(v[index]) / uniforms.sqrtBiasCorrection2 + uniforms.eps;
    result[index] = param[index] * uniforms.decay - m[index] / denom * uniforms.stepSize;`, [
    { name: 'decay', type: 'f32', value: a.decay },
    { name: 'sqrtBiasCorrection2', type: 'f32', value: a.sqrtBiasCorrection2 },
    { name: 'eps', type: 'f32', value: a.eps },
    { name: 'stepSize', type: 'f32', value: a.stepSize },
  ]), [param, nextM, nextV], 'float32');
  return [nextParam, nextM, nextV];
};

export const webgpuAdamUpdateConfig: KernelConfig = { kernelName: ADAM_UPDATE, backendName: 'webgpu', kernelFunc: adamUpdateKernel };

/**
 * Implements: attention's change of layout between the QKV linear and the heads, both ways, on webgpu.
 * `GptHybridSplitHeads`: qkv [B, T, heads, 3 headDim] (each head's q|k|v) -> q, k, v [B, heads, T,
 * headDim]. `GptHybridMergeHeads`, its inverse for the gradients: dq, dk, dv [B, heads, T, headDim] ->
 * dQkv [B, T, heads, 3 headDim]. Pure data movement: the tf ops' results bit for bit.
 *
 * Why: as tf ops the split is a slice and a transpose per part (six dispatches) and the merge a concat
 * and a transpose; here one dispatch per output.
 */
import type { KernelConfig, KernelFunc, TensorInfo } from '../../tf.ts';
import { MERGE_HEADS, SPLIT_HEADS } from '../kernel-names.ts';
import { asWebgpuBackend, elementwiseProgram, runProgram, type Scalar } from './program.ts';

function layout(t: number, heads: number, headDim: number): Scalar[] {
  return [
    { name: 't', type: 'i32', value: t },
    { name: 'heads', type: 'i32', value: heads },
    { name: 'headDim', type: 'i32', value: headDim },
  ];
}

function requireFloat(kernel: string, tensors: Record<string, TensorInfo | undefined>, shape: number[]): void {
  for (const [name, tensor] of Object.entries(tensors)) {
    if (tensor === undefined || tensor.dtype !== 'float32' || tensor.shape.join() !== shape.join()) {
      throw new Error(`${kernel}: input '${name}' must be float32 [${shape}], got ${tensor === undefined ? 'none' : `${tensor.dtype} [${tensor.shape}]`}.`);
    }
  }
}

const splitHeadsKernel: KernelFunc = (args) => {
  const backend = asWebgpuBackend(args.backend, SPLIT_HEADS);
  const { qkv } = args.inputs;
  if (qkv === undefined || qkv.shape.length !== 4 || qkv.shape[3]! % 3 !== 0) {
    throw new Error(`${SPLIT_HEADS}: expected input 'qkv' [B, T, heads, 3 headDim], got ${qkv === undefined ? `[${Object.keys(args.inputs)}]` : `[${qkv.shape}]`}.`);
  }
  const [batch, t, heads, width] = qkv.shape as [number, number, number, number];
  requireFloat(SPLIT_HEADS, { qkv }, qkv.shape);
  const headDim = width / 3;
  const part = (which: number) => runProgram(backend, elementwiseProgram('gptSplitHeads', ['qkv'], [batch, heads, t, headDim], `
    let d = index % uniforms.headDim;
    let position = (index / uniforms.headDim) % uniforms.t;
    let head = (index / (uniforms.headDim * uniforms.t)) % uniforms.heads;
    let b = index / (uniforms.headDim * uniforms.t * uniforms.heads);
    result[index] = qkv[((b * uniforms.t + position) * uniforms.heads + head) * 3 * uniforms.headDim + uniforms.part * uniforms.headDim + d];`,
  [...layout(t, heads, headDim), { name: 'part', type: 'i32', value: which }]), [qkv], 'float32');
  return [part(0), part(1), part(2)];
};

const mergeHeadsKernel: KernelFunc = (args) => {
  const backend = asWebgpuBackend(args.backend, MERGE_HEADS);
  const { dq, dk, dv } = args.inputs;
  if (dq === undefined || dq.shape.length !== 4) {
    throw new Error(`${MERGE_HEADS}: expected inputs 'dq', 'dk', 'dv' [B, heads, T, headDim], got [${Object.keys(args.inputs)}]${dq === undefined ? '' : ` with dq [${dq.shape}]`}.`);
  }
  const [batch, heads, t, headDim] = dq.shape as [number, number, number, number];
  requireFloat(MERGE_HEADS, { dq, dk, dv }, dq.shape);
  return runProgram(backend, elementwiseProgram('gptMergeHeads', ['dq', 'dk', 'dv'], [batch, t, heads, 3 * headDim], `
    let j = index % (3 * uniforms.headDim);
    let head = (index / (3 * uniforms.headDim)) % uniforms.heads;
    let position = (index / (3 * uniforms.headDim * uniforms.heads)) % uniforms.t;
    let b = index / (3 * uniforms.headDim * uniforms.heads * uniforms.t);
    let part = j / uniforms.headDim;
    let source = ((b * uniforms.heads + head) * uniforms.t + position) * uniforms.headDim + j % uniforms.headDim;
    // Every input read on every path: the stock backend drops a binding its shader never reads.
    let q = dq[source];
    let k = dk[source];
    let v = dv[source];
    result[index] = select(select(v, k, part == 1), q, part == 0);`, layout(t, heads, headDim)), [dq!, dk!, dv!], 'float32');
};

export const webgpuSplitHeadsConfig: KernelConfig = { kernelName: SPLIT_HEADS, backendName: 'webgpu', kernelFunc: splitHeadsKernel };
export const webgpuMergeHeadsConfig: KernelConfig = { kernelName: MERGE_HEADS, backendName: 'webgpu', kernelFunc: mergeHeadsKernel };

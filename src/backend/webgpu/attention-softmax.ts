/**
 * Implements: `GptHybridAttentionSoftmax` on webgpu: attention's probabilities from the raw scores
 * q k^T [B, heads, T, T] and the additive mask bias [B or 1, 1, T, T]: softmax(scores * scale + bias)
 * over the last axis, as exp(x - max) / sum (primitives.ts attentionProbs).
 *
 * Why: the tf-op form is three dispatches (the scale, the bias, the softmax); this is one workgroup per
 * row of T.
 */
import type { KernelConfig, KernelFunc } from '../../tf.ts';
import { ATTENTION_SOFTMAX } from '../kernel-names.ts';
import { asWebgpuBackend, rowProgram, runProgram } from './program.ts';

const attentionSoftmaxKernel: KernelFunc = (args) => {
  const backend = asWebgpuBackend(args.backend, ATTENTION_SOFTMAX);
  const { scores, bias } = args.inputs;
  const scale = args.attrs?.['scale'];
  if (scores === undefined || bias === undefined || typeof scale !== 'number') {
    throw new Error(`${ATTENTION_SOFTMAX}: expected inputs 'scores', 'bias' and a numeric attr 'scale', got [${Object.keys(args.inputs)}] and scale=${String(scale)}.`);
  }
  const [batch, heads, t, t2] = scores.shape as [number, number, number, number];
  if (scores.shape.length !== 4 || t !== t2 || bias.shape.length !== 4 || (bias.shape[0] !== batch && bias.shape[0] !== 1) ||
      bias.shape.slice(1).join() !== `1,${t},${t}` || scores.dtype !== 'float32' || bias.dtype !== 'float32') {
    throw new Error(`${ATTENTION_SOFTMAX}: needs float32 scores [B, heads, T, T] and bias [B or 1, 1, T, T], got [${scores.shape}] and [${bias.shape}].`);
  }
  const rows = batch * heads * t;
  return runProgram(backend, rowProgram('gptAttentionSoftmax', ['scores', 'bias'], scores.shape, rows, t, (reduce) => `
    let t = uniforms.t;
    // The bias row of this score row: its batch's (or the only one), its query position's.
    let biasRow = select(row / (uniforms.heads * t), 0, uniforms.biasBatches == 1) * t + row % t;
    var rowMax = -3.402823e+38;
    for (var c = tid; valid && c < t; c += threads) {
      rowMax = max(rowMax, scores[row * t + c] * uniforms.scale + bias[biasRow * t + c]);
    }
    ${reduce('total_max', 'rowMax', 'max')}
    var partial = 0.0;
    for (var c = tid; valid && c < t; c += threads) {
      partial += exp(scores[row * t + c] * uniforms.scale + bias[biasRow * t + c] - total_max);
    }
    ${reduce('sum', 'partial')}
    for (var c = tid; valid && c < t; c += threads) {
      result[row * t + c] = exp(scores[row * t + c] * uniforms.scale + bias[biasRow * t + c] - total_max) / sum;
    }`, [
    { name: 't', type: 'i32', value: t },
    { name: 'heads', type: 'i32', value: heads },
    { name: 'biasBatches', type: 'i32', value: bias.shape[0]! },
    { name: 'scale', type: 'f32', value: scale },
  ]), [scores, bias], 'float32');
};

export const webgpuAttentionSoftmaxConfig: KernelConfig = { kernelName: ATTENTION_SOFTMAX, backendName: 'webgpu', kernelFunc: attentionSoftmaxKernel };

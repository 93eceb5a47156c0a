/**
 * Implements: `GptHybridSoftmaxGrad` on webgpu: the gradient of attention's scores from that of its
 * probabilities, over the last axis, times the scores' scale: probs * (dprobs - sum(dprobs * probs))
 * * scale (primitives.ts attentionScoresGrad).
 *
 * Why: the tf-op form is five dispatches (a product, its row sums, a difference, two products); this
 * is one workgroup per row.
 */
import type { KernelConfig, KernelFunc } from '../../tf.ts';
import { SOFTMAX_GRAD } from '../kernel-names.ts';
import { asWebgpuBackend, rowProgram, runProgram } from './program.ts';

const softmaxGradKernel: KernelFunc = (args) => {
  const backend = asWebgpuBackend(args.backend, SOFTMAX_GRAD);
  const { dprobs, probs } = args.inputs;
  const scale = args.attrs?.['scale'];
  if (dprobs === undefined || probs === undefined || typeof scale !== 'number') {
    throw new Error(`${SOFTMAX_GRAD}: expected inputs 'dprobs', 'probs' and a numeric attr 'scale', got [${Object.keys(args.inputs)}] and scale=${String(scale)}.`);
  }
  if (probs.shape.length === 0 || dprobs.shape.join() !== probs.shape.join() || dprobs.dtype !== 'float32' || probs.dtype !== 'float32') {
    throw new Error(`${SOFTMAX_GRAD}: needs float32 dprobs and probs of one shape, got [${dprobs.shape}] and [${probs.shape}].`);
  }
  const cols = probs.shape[probs.shape.length - 1]!;
  const rows = probs.shape.reduce((product, dim) => product * dim, 1) / cols;
  return runProgram(backend, rowProgram('gptSoftmaxGrad', ['dprobs', 'probs'], probs.shape, rows, cols, (reduce) => `
    let cols = uniforms.cols;
    var partial = 0.0;
    for (var c = tid; valid && c < cols; c += threads) {
      partial += dprobs[row * cols + c] * probs[row * cols + c];
    }
    ${reduce('dot', 'partial')}
    for (var c = tid; valid && c < cols; c += threads) {
      let i = row * cols + c;
      result[i] = probs[i] * (dprobs[i] - dot) * uniforms.scale;
    }`, [
    { name: 'cols', type: 'i32', value: cols },
    { name: 'scale', type: 'f32', value: scale },
  ]), [dprobs, probs], 'float32');
};

export const webgpuSoftmaxGradConfig: KernelConfig = { kernelName: SOFTMAX_GRAD, backendName: 'webgpu', kernelFunc: softmaxGradKernel };

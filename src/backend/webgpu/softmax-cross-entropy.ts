/**
 * Implements: `GptHybridSoftmaxCrossEntropyRows` on webgpu: for logits [rows, V] and int32 labels
 * [rows], each row's loss log(sum exp(l - max)) - (l[label] - max) and dLogits = (softmax - onehot) *
 * gradScale [rows, V] (primitives.ts lmHeadCrossEntropy), in the fallback's float32 order. A label
 * outside [0, V) gives the row a NaN loss: the GPU cannot throw, and a NaN loss stops training.
 *
 * Why: the tf-op form is ~16 ops over [rows, V] (max, sub, exp, sum, the label's pick, log, the one-hot
 * and its terms); this is two dispatches, one workgroup per row each: the loss, and the gradient,
 * which finds the row's max and sum again rather than waiting on a third pass to store them.
 */
import type { KernelConfig, KernelFunc } from '../../tf.ts';
import { SOFTMAX_CROSS_ENTROPY_ROWS } from '../kernel-names.ts';
import { asWebgpuBackend, rowProgram, runProgram, type Reduce } from './program.ts';

/** The row's max and sum of exp(l - max), in every thread (logits bound as `logits`, V as `vocab`). */
const rowStats = (reduce: Reduce) => `
  let vocab = uniforms.logitsShape.y;
  let base = row * vocab;
  var partialMax = -3.402823e+38f;
  for (var c = tid; valid && c < vocab; c += threads) {
    partialMax = max(partialMax, logits[base + c]);
  }
  ${reduce('rowMax', 'partialMax', 'max')}
  var partialSum = 0.0;
  for (var c = tid; valid && c < vocab; c += threads) {
    partialSum += exp(logits[base + c] - rowMax);
  }
  ${reduce('rowSum', 'partialSum')}
  var label = 0;
  if (valid) {
    label = labels[row];
  }`;

const softmaxCrossEntropyKernel: KernelFunc = (args) => {
  const backend = asWebgpuBackend(args.backend, SOFTMAX_CROSS_ENTROPY_ROWS);
  const { logits, labels } = args.inputs;
  const gradScale = args.attrs?.['gradScale'];
  if (logits === undefined || labels === undefined || typeof gradScale !== 'number') {
    throw new Error(`${SOFTMAX_CROSS_ENTROPY_ROWS}: expected inputs 'logits' and 'labels' and a numeric attr 'gradScale', ` +
      `got inputs [${Object.keys(args.inputs)}] and gradScale=${String(gradScale)}.`);
  }
  const [rows, vocab] = logits.shape as [number, number];
  if (logits.dtype !== 'float32' || logits.shape.length !== 2 || labels.dtype !== 'int32' || labels.shape.join() !== `${rows}`) {
    throw new Error(`${SOFTMAX_CROSS_ENTROPY_ROWS}: needs float32 logits [rows, V] and int32 labels [rows]; got ${logits.dtype} [${logits.shape}] and ${labels.dtype} [${labels.shape}].`);
  }
  const losses = runProgram(backend, rowProgram('gptSoftmaxCrossEntropyLoss', ['logits', 'labels'], [rows], rows, vocab, (reduce) => `${rowStats(reduce)}
    if (valid && tid == 0) {
      if (label >= 0 && label < vocab) {
        result[row] = log(rowSum) - (logits[base + label] - rowMax);
      } else {
        result[row] = uniforms.NAN;
      }
    }`), [logits, labels], 'float32');
  const dLogits = runProgram(backend, rowProgram('gptSoftmaxCrossEntropyGrad', ['logits', 'labels'], [rows, vocab], rows, vocab, (reduce) => `${rowStats(reduce)}
    let perSum = uniforms.gradScale / rowSum;
    for (var c = tid; valid && c < vocab; c += threads) {
      let scaled = exp(logits[base + c] - rowMax) * perSum;
      result[base + c] = select(scaled, scaled - uniforms.gradScale, c == label);
    }`, [{ name: 'gradScale', type: 'f32', value: gradScale }]), [logits, labels], 'float32');
  return [losses, dLogits];
};

export const webgpuSoftmaxCrossEntropyConfig: KernelConfig = {
  kernelName: SOFTMAX_CROSS_ENTROPY_ROWS,
  backendName: 'webgpu',
  kernelFunc: softmaxCrossEntropyKernel,
};

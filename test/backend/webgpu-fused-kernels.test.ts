// Tests the fused webgpu kernels (src/backend/webgpu/) against the tf ops they replace, run on cpu
// (where none is registered, so the callers fall back to the ops): LayerNorm and GELU with their
// backwards, the LM head's cross-entropy, the Adam update, the sums of squares, the sums over rows,
// a linear with its bias, a bias and residual sum, attention's softmax with its backward and its
// heads, over odd sizes, rows and widths with tails, more tensors than one shader binds, and no
// tensor left behind.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '../../src/tf.ts';
import { GELU, GELU_GRAD, LAYER_NORM, LAYER_NORM_GRAD, LAYER_NORM_GRAD_RESIDUAL, SUM_OF_SQUARES } from '../../src/backend/kernel-names.ts';
import { withBackend } from '../../src/backend/with-backend.ts';
import { assertGpuHealthy } from '../../src/backend/webgpu/activate.ts';
import { geluBackward, geluForward, layerNormBackward, layerNormForward, lmHeadCrossEntropy, linear, addBiasToResidual, sumRows, attentionProbs, attentionScoresGrad, mergeHeads, splitHeads } from '../../src/model/manual/primitives.ts';
import { sumOfSquares } from '../../src/train/optimizer.ts';
import { ADAM_BASE, ADAM_CASES, threeAdamSteps } from './adam-steps.ts';
import { assertClose, randomValues } from './compare.ts';
import { onWebgpuAndCpu, readAll, startWebgpu } from './on-webgpu.ts';

/** Element-wise results: float32 rounding apart (1e-5 of the element or of the tensor's scale). */
const ELEMENTWISE = 1e-5;

function layerNormBoth(rows: number, h: number): tf.Tensor[] {
  const x = tf.tensor2d(randomValues(rows * h, 1).map((v) => 3 * v + 0.5), [rows, h]);
  const gamma = tf.tensor1d(randomValues(h, 2));
  const beta = tf.tensor1d(randomValues(h, 3));
  const dy = tf.tensor2d(randomValues(rows * h, 4), [rows, h]);
  // primitives.ts runs the kernel only for widths of a multiple of 4 (a wasm limit); ours has none.
  const residual = tf.tensor2d(randomValues(rows * h, 6), [rows, h]);
  if (h % 4 !== 0 && tf.getBackend() === 'webgpu') {
    const [y, xhat, rstd] = tf.engine().runKernel(LAYER_NORM, { x, gamma, beta }, { epsilon: 1e-5 }) as tf.Tensor[];
    const saved = { dy, xhat: xhat!, rstd: rstd!, gamma };
    const [dxResidual] = tf.engine().runKernel(LAYER_NORM_GRAD_RESIDUAL, { ...saved, residual }, {}) as tf.Tensor[];
    return [y!, xhat!, rstd!, ...(tf.engine().runKernel(LAYER_NORM_GRAD, saved, {}) as tf.Tensor[]), dxResidual!];
  }
  const forward = layerNormForward(x, gamma, beta, 1e-5);
  const backward = layerNormBackward(dy, forward.saved, gamma);
  const withResidual = layerNormBackward(dy, forward.saved, gamma, residual);
  return [forward.y, forward.saved.xhat, forward.saved.rstd, backward.dx, backward.dgamma, backward.dbeta, withResidual.dx];
}

function geluBoth(shape: number[]): tf.Tensor[] {
  const size = shape.reduce((a, b) => a * b, 1);
  const values = randomValues(size, 5).map((v) => 6 * v);
  // The ends of tanh: overflow of e^2x, and cancellation near 0.
  [50, -50, 1e-4, -3e-3, 0, 0.12, -0.13].forEach((v, i) => {
    if (i < size) values[i] = v;
  });
  const x = tf.tensor(values, shape);
  const dy = tf.tensor(randomValues(size, 6), shape);
  // On webgpu the model's path keeps no tanh (its backward recomputes it): the kernels that keep it run directly.
  const forward = geluForward(x);
  const dx = geluBackward(dy, forward.saved);
  if (tf.getBackend() !== 'webgpu') return [forward.y, forward.saved.tanh!, dx, forward.y, dx];
  const [yKept, tanh] = tf.engine().runKernel(GELU, { x }, {}) as tf.Tensor[];
  return [forward.y, tanh!, dx, yKept!, tf.engine().runKernel(GELU_GRAD, { dy, x, tanh: tanh! }, {}) as tf.Tensor];
}

function crossEntropyBoth(rows: number, hidden: number, vocab: number, labelOf: (row: number) => number = (row) => (row * 7919) % vocab): tf.Tensor[] {
  const normed = tf.tensor2d(randomValues(rows * hidden, 7).map((v) => 2 * v), [rows, hidden]);
  const words = tf.tensor2d(randomValues(vocab * hidden, 8), [vocab, hidden]);
  const labels = tf.tensor1d(Array.from({ length: rows }, (_, row) => labelOf(row)), 'int32');
  const { losses, dNormed, dWordEmbedding } = lmHeadCrossEntropy(normed, words, labels, 1 / rows);
  return [losses, dNormed, dWordEmbedding];
}

const ADAM_SHAPES: number[][] = [[7], [33, 65], [5, 3], [4], [1], [130, 257]];

function squaresInputs(): tf.Tensor[] {
  const shapes = [[50304, 64], [64], [], [3, 5], [0], [256, 64], [7], [1], [64, 256], [2, 3, 5], [1000], [13], [64, 192], [5]];
  return shapes.map((shape, i) => tf.tensor(randomValues(shape.reduce((a, b) => a * b, 1), 40 + i).map((v) => (i + 1) * v), shape));
}

before(async () => {
  await startWebgpu('cpu');
});

// A shader that fails validation reports it as an event and leaves its output unwritten.
after(() => assertGpuHealthy());

describe('webgpu fused kernels', () => {
  test('layer norm - y, xhat, rstd and the backward, with and without a residual gradient, match the cpu ops', async () => {
    for (const [rows, h] of [[7, 12], [256, 64], [3, 256], [5, 6], [1, 4], [33, 1000], [300, 4]] as const) {
      const [webgpu, cpu] = await onWebgpuAndCpu(() => layerNormBoth(rows, h));
      ['y', 'xhat', 'rstd', 'dx', 'dgamma', 'dbeta', 'dx with a residual'].forEach((name, i) => assertClose(webgpu[i]!, cpu[i]!, `layer norm [${rows}, ${h}]: ${name}`, ELEMENTWISE));
    }
  });

  test('gelu - y, tanh and the backward match the cpu ops', async () => {
    for (const shape of [[3, 5], [256, 256], [2, 1], [4], [1000, 37]]) {
      const [webgpu, cpu] = await onWebgpuAndCpu(() => geluBoth(shape));
      ['y', 'tanh', 'dx', 'y with its tanh kept', 'dx from the kept tanh'].forEach((name, i) => assertClose(webgpu[i]!, cpu[i]!, `gelu [${shape}]: ${name}`, ELEMENTWISE));
    }
  });

  test('lm head cross-entropy - losses, dNormed and dWordEmbedding match the cpu ops', async () => {
    for (const [rows, hidden, vocab] of [[7, 16, 1000], [33, 8, 50304], [1, 4, 3]] as const) {
      const [webgpu, cpu] = await onWebgpuAndCpu(() => crossEntropyBoth(rows, hidden, vocab));
      // The matmuls around the kernel sum in another order on each backend.
      ['losses', 'dNormed', 'dWordEmbedding'].forEach((name, i) => assertClose(webgpu[i]!, cpu[i]!, `cross-entropy [${rows}, ${hidden}, ${vocab}]: ${name}`, 1e-4));
    }
  });

  test('lm head cross-entropy - a label outside the vocabulary makes its row\'s loss NaN', async () => {
    const [losses] = await withBackend('webgpu', () => readAll(tf.tidy(() => crossEntropyBoth(3, 4, 10, (row) => (row === 1 ? 10 : row)))));
    assert.ok(Number.isNaN(losses!.values[1]!), `the bad row's loss is ${losses!.values[1]}`);
    assert.ok(Number.isFinite(losses!.values[0]!) && Number.isFinite(losses!.values[2]!), 'the other rows keep their losses');
  });

  test('sum over rows - a bias gradient matches the cpu ops, rows and widths with tails', async () => {
    const [webgpu, cpu] = await onWebgpuAndCpu(() => [[7, 100], [301, 5], [1, 3], [2, 65]].map(([rows, h], i) => sumRows(tf.tensor2d(randomValues(rows! * h!, 20 + i), [rows!, h!]))));
    webgpu.forEach((result, i) => assertClose(result, cpu[i]!, `sums ${i}`, ELEMENTWISE));
  });

  test('bias and residual - x + (y + bias) gives the tf ops\' bits', async () => {
    const [webgpu, cpu] = await onWebgpuAndCpu(() => [[7, 33], [128, 64]].map(([rows, h], i) => addBiasToResidual(
      tf.tensor2d(randomValues(rows! * h!, 110 + i), [rows!, h!]), tf.tensor2d(randomValues(rows! * h!, 120 + i), [rows!, h!]), tf.tensor1d(randomValues(h!, 130 + i)))));
    webgpu.forEach((result, i) => assertClose(result, cpu[i]!, `bias and residual ${i}`, 0));
  });

  test('linear - the matmul with its bias added matches the cpu ops', async () => {
    const [webgpu, cpu] = await onWebgpuAndCpu(() => [[7, 20, 33], [128, 64, 192]].map(([rows, inputs, outputs], i) => linear(
      tf.tensor2d(randomValues(rows! * inputs!, 30 + i), [rows!, inputs!]), tf.tensor2d(randomValues(inputs! * outputs!, 40 + i), [inputs!, outputs!]), tf.tensor1d(randomValues(outputs!, 50 + i)))));
    webgpu.forEach((result, i) => assertClose(result, cpu[i]!, `linear ${i}`, ELEMENTWISE));
  });

  test('attention softmax - probabilities and the scores\' gradient match the cpu ops, a bias per batch or shared', async () => {
    const [webgpu, cpu] = await onWebgpuAndCpu(() => [[2, 3, 7, 2], [1, 2, 130, 1], [3, 1, 5, 1]].flatMap(([batch, heads, t, biasBatches], i) => {
      const scores = tf.tensor4d(randomValues(batch! * heads! * t! * t!, 60 + i).map((v) => 8 * v), [batch!, heads!, t!, t!]);
      const bias = tf.tensor4d(randomValues(biasBatches! * t! * t!, 70 + i).map((v) => (v > 0.3 ? -10000 : v)), [biasBatches!, 1, t!, t!]);
      const probs = attentionProbs(scores, bias, 0.125);
      const dprobs = tf.tensor4d(randomValues(batch! * heads! * t! * t!, 80 + i), [batch!, heads!, t!, t!]);
      return [probs, attentionScoresGrad(dprobs, probs, 0.125)];
    }));
    webgpu.forEach((result, i) => assertClose(result, cpu[i]!, `attention softmax ${i}`, ELEMENTWISE));
  });

  test('attention heads - the split of qkv and the merge of the gradients give the tf ops\' bits', async () => {
    const [webgpu, cpu] = await onWebgpuAndCpu(() => [[2, 5, 3, 4], [1, 130, 2, 7]].flatMap(([batch, t, heads, headDim], i) => {
      const qkv = tf.tensor4d(randomValues(batch! * t! * heads! * 3 * headDim!, 90 + i), [batch!, t!, heads!, 3 * headDim!]);
      const [q, k, v] = splitHeads(qkv);
      return [q, k, v, mergeHeads(tf.mul(q, 2), tf.mul(k, 3), tf.mul(v, 4))];
    }));
    webgpu.forEach((result, i) => assertClose(result, cpu[i]!, `heads ${i}`, 0));
  });

  for (const [what, config] of ADAM_CASES) {
    test(`adam update, ${what} - parameters and moments match the cpu ops`, async () => {
      const webgpu = await withBackend('webgpu', async () => readAll(await threeAdamSteps(config, ADAM_SHAPES)));
      const cpu = await withBackend('cpu', async () => readAll(await threeAdamSteps(config, ADAM_SHAPES)));
      webgpu.forEach((result, i) => assertClose(result, cpu[i]!, `${what}: tensor ${i}`, ELEMENTWISE));
    });
  }

  test('adam update - the packed moments go through a checkpoint\'s save and restore', async () => {
    const webgpu = await withBackend('webgpu', async () => readAll(await threeAdamSteps(ADAM_BASE, ADAM_SHAPES, true)));
    const cpu = await withBackend('cpu', async () => readAll(await threeAdamSteps(ADAM_BASE, ADAM_SHAPES)));
    webgpu.forEach((result, i) => assertClose(result, cpu[i]!, `restored: tensor ${i}`, ELEMENTWISE));
  });

  test('sum of squares - one value per tensor over more tensors than a shader binds, the empty one 0', async () => {
    const [webgpu, cpu] = await onWebgpuAndCpu(() => {
      const tensors = squaresInputs();
      // On cpu, what optimizer.ts sumOfSquares falls back to.
      return [tf.getBackend() === 'webgpu'
        ? tf.engine().runKernel(SUM_OF_SQUARES, Object.fromEntries(tensors.map((t, i) => [String(i), t])), {}) as tf.Tensor
        : tf.stack(tensors.map((t) => tf.sum(tf.square(t))))];
    });
    // Float32 partial sums in a tree of 256 on the GPU, a running sum on cpu: 1e-5 of 3.2M squares.
    assertClose(webgpu[0]!, cpu[0]!, 'sums of squares', 1e-5);
    assert.equal(webgpu[0]!.values[4], 0, 'the empty tensor\'s sum');
  });

  test('memory - leave no tensors behind', async () => {
    await withBackend('webgpu', async () => {
      const before = tf.memory().numTensors;
      await readAll(tf.tidy(() => [...layerNormBoth(7, 12), ...layerNormBoth(5, 6), ...geluBoth([3, 5]), ...crossEntropyBoth(7, 16, 100)]));
      await readAll(await threeAdamSteps(ADAM_BASE, ADAM_SHAPES));
      await readAll(await threeAdamSteps(ADAM_BASE, ADAM_SHAPES, true));
      const tensors = squaresInputs();
      await sumOfSquares(tensors);
      tf.dispose(tensors);
      assert.equal(tf.memory().numTensors, before, 'tensors leaked');
    });
  });
});

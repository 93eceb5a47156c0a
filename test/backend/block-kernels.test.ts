// Tests the fused wasm LayerNorm and GELU kernels (forward and backward) against the tf-op formulation
// on cpu, over widths that are and are not multiples of 4 (the latter use the ops on wasm too) and
// GELU sizes with tails of 1-3 elements.
import { before, describe, test } from 'node:test';
import * as tf from '../../src/tf.ts';
import { initBackend } from '../../src/backend/select.ts';
import { withBackend } from '../../src/backend/with-backend.ts';
import { geluBackward, geluForward, layerNormBackward, layerNormForward } from '../../src/model/manual/primitives.ts';
import { assertClose, assertNoLeak, onWasmAndCpu, randomValues, take, tidyRead, type Result } from './compare.ts';

function layerNormBoth(rows: number, h: number): Result[] {
  return tidyRead(() => {
    const x = tf.tensor2d(randomValues(rows * h, 1).map((v) => 3 * v + 0.5), [rows, h]);
    const gamma = tf.tensor1d(randomValues(h, 2));
    const beta = tf.tensor1d(randomValues(h, 3));
    const dy = tf.tensor2d(randomValues(rows * h, 4), [rows, h]);
    const forward = layerNormForward(x, gamma, beta, 1e-5);
    const backward = layerNormBackward(dy, forward.saved, gamma);
    return [forward.y, forward.saved.xhat, forward.saved.rstd, backward.dx, backward.dgamma, backward.dbeta].map(take);
  });
}

function geluBoth(shape: number[]): Result[] {
  return tidyRead(() => {
    const size = shape.reduce((a, b) => a * b, 1);
    const x = tf.tensor(randomValues(size, 5).map((v) => 6 * v), shape);
    const dy = tf.tensor(randomValues(size, 6), shape);
    const forward = geluForward(x);
    return [forward.y, forward.saved.tanh!, geluBackward(dy, forward.saved)].map(take);
  });
}

before(async () => {
  await initBackend('wasm', () => {});
});

describe('wasm LayerNorm and GELU kernels', () => {
  test('layer norm - y, xhat, rstd and the backward match the cpu ops', async () => {
    for (const [rows, h] of [[7, 12], [256, 64], [3, 256], [5, 6], [1, 4]] as const) {
      const [wasm, cpu] = await onWasmAndCpu(() => layerNormBoth(rows, h));
      ['y', 'xhat', 'rstd', 'dx', 'dgamma', 'dbeta'].forEach((name, i) => assertClose(wasm[i]!, cpu[i]!, `layer norm [${rows}, ${h}]: ${name}`, 1e-5));
    }
  });

  test('gelu - y, tanh and the backward match the cpu ops', async () => {
    for (const shape of [[3, 5], [256, 256], [2, 1], [4]]) {
      const [wasm, cpu] = await onWasmAndCpu(() => geluBoth(shape));
      ['y', 'tanh', 'dx'].forEach((name, i) => assertClose(wasm[i]!, cpu[i]!, `gelu [${shape}]: ${name}`, 1e-5));
    }
  });

  test('memory - leave no tensors behind', async () => {
    await withBackend('wasm', () => assertNoLeak('layer norm and gelu', () => {
      layerNormBoth(7, 12);
      geluBoth([3, 5]);
    }));
  });
});

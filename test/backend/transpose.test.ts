// Tests the replacement wasm Transpose kernel against the cpu backend, over the permutations it
// speeds up, the ones it hands to the stock kernel, every dtype, and through gradients.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '../../src/tf.ts';
import { initBackend } from '../../src/backend/select.ts';
import { reducePermutation } from '../../src/backend/wasm/transpose.ts';
import { withBackend } from '../../src/backend/with-backend.ts';
import { assertClose, assertNoLeak, onWasmAndCpu, randomValues, take, tidyRead, type Result } from './compare.ts';

const CASES: Array<[shape: number[], perm: number[]]> = [
  [[1, 7], [1, 0]], [[7, 1], [1, 0]], [[33, 65], [1, 0]], [[65, 33], [1, 0]], [[64, 64], [1, 0]],
  [[3, 7, 33], [0, 2, 1]], [[2, 65, 33], [0, 2, 1]], [[7, 3, 5], [1, 0, 2]], [[33, 2, 300], [1, 0, 2]],
  [[2, 7, 3, 5], [0, 2, 1, 3]], [[2, 33, 4, 64], [0, 2, 1, 3]], [[2, 4, 33, 64], [0, 2, 1, 3]],
  [[2, 3, 4, 5], [0, 1, 3, 2]], [[1, 7, 1, 33], [3, 2, 1, 0]], [[3, 4], [0, 1]], [[1, 1], [1, 0]],
  // Rows and cols multiples of 4: the SIMD 4x4 blocks, over whole and partial 32x32 tiles, batched too.
  [[68, 40], [1, 0]], [[40, 68], [1, 0]], [[3, 36, 8], [0, 2, 1]], [[4, 100, 12], [0, 2, 1]],
  // Not sped up: served by the stock kernel.
  [[3, 4, 5], [2, 0, 1]], [[2, 3, 4, 5], [3, 1, 0, 2]], [[2, 3, 4, 5, 6], [2, 0, 3, 1, 4]],
];

function transposeOn(shape: number[], perm: number[], dtype: 'float32' | 'int32' | 'bool'): () => Result {
  const values = randomValues(shape.reduce((x, y) => x * y, 1), 17);
  return () => tidyRead(() => {
    const floats = tf.tensor(values, shape);
    const x = dtype === 'float32' ? floats : dtype === 'int32' ? tf.cast(tf.mul(floats, 1000), 'int32') : tf.greater(floats, 0);
    return take(tf.transpose(x, perm));
  });
}

before(async () => {
  await initBackend('wasm', () => {});
});

describe('wasm Transpose', () => {
  for (const dtype of ['float32', 'int32', 'bool'] as const) {
    test(`transpose - ${dtype} matches cpu over the shape and permutation table`, async () => {
      for (const [shape, perm] of CASES) {
        const [wasm, cpu] = await onWasmAndCpu(transposeOn(shape, perm, dtype));
        assert.deepEqual(wasm.shape, cpu.shape, `shape of transpose([${shape}], [${perm}])`);
        assert.deepEqual([...wasm.values], [...cpu.values], `${dtype} transpose([${shape}], [${perm}])`);
      }
    });
  }

  test('transpose - reducePermutation drops size-1 dims and merges dims that stay adjacent', () => {
    assert.deepEqual(reducePermutation([2, 3, 4, 5], [0, 2, 1, 3]), { shape: [2, 3, 4, 5], perm: [0, 2, 1, 3] });
    assert.deepEqual(reducePermutation([2, 3, 4, 5], [0, 1, 3, 2]), { shape: [6, 4, 5], perm: [0, 2, 1] });
    assert.deepEqual(reducePermutation([2, 3, 4], [1, 2, 0]), { shape: [2, 12], perm: [1, 0] });
    assert.deepEqual(reducePermutation([1, 7, 1, 33], [3, 2, 1, 0]), { shape: [7, 33], perm: [1, 0] });
    assert.deepEqual(reducePermutation([3, 4], [0, 1]), { shape: [12], perm: [0] });
  });

  test('transpose - reductions over outer axes (which call the stock transpose internally) match cpu', async () => {
    // Regression: registering our Transpose before the backend started left the stock one
    // without its setup, and every such reduction threw "wasmTranspose is not a function".
    const values = randomValues(3 * 5 * 7, 23);
    const compute = (): Result => tidyRead(() => take(tf.sum(tf.tensor(values, [3, 5, 7]), [0, 2])));
    const [wasm, cpu] = await onWasmAndCpu(compute);
    assertClose(wasm, cpu, 'sum over axes [0, 2]');
  });

  test('gradients - tf.grads through the attention-head transpose matches cpu', async () => {
    const values = randomValues(2 * 7 * 3 * 5, 21);
    const weights = randomValues(2 * 7 * 3 * 5, 22);
    const compute = (): Result => tidyRead(() => {
      const loss = (x: tf.Tensor) => tf.sum(tf.mul(tf.transpose(x, [0, 2, 1, 3]), tf.tensor(weights, [2, 3, 7, 5])));
      return take(tf.grad(loss)(tf.tensor(values, [2, 7, 3, 5])));
    });
    const [wasm, cpu] = await onWasmAndCpu(compute);
    assertClose(wasm, cpu, 'd/dx of transpose [0,2,1,3]');
  });

  test('memory - transposes leave no tensors behind', async () => {
    await withBackend('wasm', () => assertNoLeak('transpose', () => {
      for (const [shape, perm] of CASES) transposeOn(shape, perm, 'float32')();
    }));
  });
});

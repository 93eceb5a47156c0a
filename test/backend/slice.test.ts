// Tests the replacement wasm Slice and SplitV kernels against the cpu backend, over ranks 1-5,
// contiguous and strided slices, every dtype, and through gradients.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '../../src/tf.ts';
import { initBackend } from '../../src/backend/select.ts';
import { withBackend } from '../../src/backend/with-backend.ts';
import { assertClose, assertNoLeak, onWasmAndCpu, randomValues, take, tidyRead, type Result } from './compare.ts';

const SLICES: Array<[shape: number[], begin: number[], size: number[]]> = [
  [[7], [2], [4]], [[7], [0], [7]], [[33, 65], [0, 0], [33, 65]], [[33, 65], [5, 0], [7, 65]],
  [[33, 65], [1, 3], [32, 60]], [[33, 65], [0, 64], [33, 1]], [[1, 7], [0, 6], [1, 1]],
  [[3, 7, 5], [1, 2, 0], [2, 5, 5]], [[3, 7, 5], [0, 0, 1], [3, 7, 3]], [[8, 127, 33], [0, 0, 0], [8, 126, 33]],
  [[2, 3, 4, 5], [1, 0, 2, 1], [1, 3, 2, 4]], [[2, 7, 3, 4, 5], [0, 1, 0, 2, 0], [2, 5, 3, 1, 5]],
  [[2, 7, 3, 4, 5], [1, 2, 1, 1, 1], [1, 4, 2, 3, 3]], [[4, 5], [2, 2], [0, 3]], [[4, 5], [1, 1], [-1, -1]],
];

const SPLITS: Array<[shape: number[], splits: number | number[], axis: number]> = [
  [[8, 3 * 4], 3, 1], [[2, 7, 3, 4, 5], 3, 2], [[2, 7, 4, 3 * 6], 3, 3], [[9, 5], [2, 3, 4], 0], [[4, 7, 2], [1, 6], 1],
];

function fromValues(values: Float32Array, shape: number[], dtype: 'float32' | 'int32' | 'bool'): tf.Tensor {
  const floats = tf.tensor(values, shape);
  return dtype === 'float32' ? floats : dtype === 'int32' ? tf.cast(tf.mul(floats, 1000), 'int32') : tf.greater(floats, 0);
}

before(async () => {
  await initBackend('wasm', () => {});
});

describe('wasm Slice and SplitV', () => {
  for (const dtype of ['float32', 'int32', 'bool'] as const) {
    test(`slice - ${dtype} matches cpu over the slice table`, async () => {
      for (const [shape, begin, size] of SLICES) {
        const values = randomValues(shape.reduce((x, y) => x * y, 1), 51);
        const compute = (): Result => tidyRead(() => take(tf.slice(fromValues(values, shape, dtype), begin, size)));
        const [wasm, cpu] = await onWasmAndCpu(compute);
        assert.deepEqual(wasm.shape, cpu.shape, `shape of slice([${shape}], [${begin}], [${size}])`);
        assert.deepEqual([...wasm.values], [...cpu.values], `${dtype} slice([${shape}], [${begin}], [${size}])`);
      }
    });
  }

  test('split - float32 matches cpu over the split table', async () => {
    for (const [shape, splits, axis] of SPLITS) {
      const values = randomValues(shape.reduce((x, y) => x * y, 1), 52);
      const compute = (): Result[] => tidyRead(() => tf.split(tf.tensor(values, shape), splits, axis).map(take));
      const [wasm, cpu] = await onWasmAndCpu(compute);
      assert.equal(wasm.length, cpu.length);
      wasm.forEach((piece, i) => assertClose(piece, cpu[i]!, `split([${shape}], ${JSON.stringify(splits)}, ${axis}) piece ${i}`));
    }
  });

  test('gradients - tf.grads through split and slice match cpu', async () => {
    const values = randomValues(2 * 5 * 3 * 4, 53);
    const compute = (): Result => tidyRead(() => {
      const loss = (x: tf.Tensor) => {
        const [a, b, c] = tf.split(x, 3, 2);
        return tf.sum(tf.add(tf.mul(a!, b!), tf.slice(c!, [0, 1, 0, 0], [2, 4, 1, 4]).mean()));
      };
      return take(tf.grad(loss)(tf.tensor(values, [2, 5, 3, 4])));
    });
    const [wasm, cpu] = await onWasmAndCpu(compute);
    assertClose(wasm, cpu, 'd/dx through split and slice');
  });

  test('memory - slices and splits leave no tensors behind', async () => {
    await withBackend('wasm', () => assertNoLeak('slice/split', () => {
      tf.tidy(() => {
        for (const [shape, begin, size] of SLICES) tf.slice(tf.zeros(shape), begin, size);
        for (const [shape, splits, axis] of SPLITS) tf.split(tf.zeros(shape), splits, axis);
      });
    }));
  });
});

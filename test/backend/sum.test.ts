// Tests the replacement wasm Sum kernel (reductions over outer axes) against the cpu backend.
import { before, describe, test } from 'node:test';
import * as tf from '../../src/tf.ts';
import { initBackend } from '../../src/backend/select.ts';
import { withBackend } from '../../src/backend/with-backend.ts';
import { assertClose, assertNoLeak, onWasmAndCpu, randomValues, take, tidyRead, type Result } from './compare.ts';

const CASES: Array<[shape: number[], axis: number | number[]]> = [
  [[33, 65], 0], [[33, 65], 1], [[33, 65], [0, 1]], [[1, 7], 0], [[7, 1], 0], [[3, 7, 5], [0, 1]], [[3, 7, 5], 1],
  [[3, 7, 5], [0, 2]], [[2, 3, 4, 5], [0, 2]], [[1024, 256], 0],
];

before(async () => {
  await initBackend('wasm', () => {});
});

describe('wasm Sum', () => {
  for (const dtype of ['float32', 'int32'] as const) {
    for (const keepDims of [false, true]) {
      test(`sum - ${dtype} keepDims=${keepDims} matches cpu over the axis table`, async () => {
        for (const [shape, axis] of CASES) {
          const values = randomValues(shape.reduce((x, y) => x * y, 1), 61);
          const compute = (): Result => tidyRead(() => {
            const floats = tf.tensor(values, shape);
            const x = dtype === 'float32' ? floats : tf.cast(tf.mul(floats, 1000), 'int32');
            return take(tf.sum(x, axis, keepDims));
          });
          const [wasm, cpu] = await onWasmAndCpu(compute);
          assertClose(wasm, cpu, `${dtype} sum([${shape}], ${JSON.stringify(axis)}, ${keepDims})`);
        }
      });
    }
  }

  test('gradients - a bias gradient (sum over rows) matches cpu', async () => {
    const values = randomValues(33 * 7, 62);
    const bias = randomValues(7, 63);
    const compute = (): Result => tidyRead(() => {
      const loss = (b: tf.Tensor) => tf.sum(tf.square(tf.add(tf.tensor(values, [33, 7]), b)));
      return take(tf.grad(loss)(tf.tensor(bias, [7])));
    });
    const [wasm, cpu] = await onWasmAndCpu(compute);
    assertClose(wasm, cpu, 'd/dbias');
  });

  test('memory - sums leave no tensors behind', async () => {
    await withBackend('wasm', () => assertNoLeak('sum', () => {
      tf.tidy(() => {
        for (const [shape, axis] of CASES) tf.sum(tf.ones(shape), axis, true);
      });
    }));
  });
});

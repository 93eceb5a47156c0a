// Tests the wasm UnsortedSegmentSum kernel (which stock wasm lacks) against the cpu backend,
// directly and as the gradient of gather (the token embedding).
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '../../src/tf.ts';
import { initBackend } from '../../src/backend/select.ts';
import { withBackend } from '../../src/backend/with-backend.ts';
import { assertClose, assertNoLeak, onWasmAndCpu, randomValues, take, tidyRead, type Result } from './compare.ts';

// tfjs-core's op takes 1-D segment ids only.
const CASES: Array<{ xShape: number[]; ids: number[]; numSegments: number }> = [
  { xShape: [5], ids: [0, 2, 0, 1, 2], numSegments: 3 },
  { xShape: [7, 33], ids: [6, 0, 6, 6, 1, 3, 0], numSegments: 7 },
  { xShape: [1, 65], ids: [0], numSegments: 1 },
  { xShape: [6, 3, 4], ids: [1, 1, 0, 4, 4, 4], numSegments: 5 },
  // Ids outside [0, numSegments) are dropped.
  { xShape: [4, 2], ids: [0, -1, 5, 1], numSegments: 2 },
];

before(async () => {
  await initBackend('wasm', () => {});
});

describe('wasm UnsortedSegmentSum', () => {
  for (const dtype of ['float32', 'int32'] as const) {
    test(`segment sum - ${dtype} matches cpu over the case table`, async () => {
      for (const { xShape, ids, numSegments } of CASES) {
        const values = randomValues(xShape.reduce((x, y) => x * y, 1), 31);
        const compute = (): Result => tidyRead(() => {
          const floats = tf.tensor(values, xShape);
          const x = dtype === 'float32' ? floats : tf.cast(tf.mul(floats, 1000), 'int32');
          return take(tf.unsortedSegmentSum(x, tf.tensor1d(ids, 'int32'), numSegments));
        });
        const [wasm, cpu] = await onWasmAndCpu(compute);
        assertClose(wasm, cpu, `${dtype} unsortedSegmentSum(x [${xShape}], ids [${ids}], ${numSegments})`);
      }
    });
  }

  for (const axis of [0, 1]) {
    test(`gradients - embedding gather on axis ${axis} with repeated ids matches cpu`, async () => {
      const table = randomValues(37 * 8, 41);
      const tableShape = axis === 0 ? [37, 8] : [8, 37];
      const ids = [3, 36, 3, 0, 5, 3, 36, 12, 0, 1, 2, 3];
      const upstream = randomValues(ids.length * 8, 42);
      const compute = (): Result => tidyRead(() => {
        const idTensor = tf.tensor(ids, [3, 4], 'int32');
        const weights = tf.tensor(upstream, axis === 0 ? [3, 4, 8] : [8, 3, 4]);
        const loss = (embedding: tf.Tensor) => tf.sum(tf.mul(tf.gather(embedding, idTensor, axis), weights));
        return take(tf.grad(loss)(tf.tensor(table, tableShape)));
      });
      const [wasm, cpu] = await onWasmAndCpu(compute);
      assertClose(wasm, cpu, `d/dtable of gather axis ${axis}`);
      // Rows never gathered get exactly zero.
      if (axis === 0) assert.ok(wasm.values.slice(4 * 8, 5 * 8).every((value) => value === 0));
    });
  }

  test('memory - segment sums and embedding gradients leave no tensors behind', async () => {
    await withBackend('wasm', () => assertNoLeak('unsortedSegmentSum', () => {
      tf.tidy(() => {
        tf.unsortedSegmentSum(tf.ones([4, 3]), tf.tensor([0, 1, 1, 0], [4], 'int32'), 2);
      });
      const gradient = tf.grad((t: tf.Tensor) => tf.sum(tf.gather(t, tf.tensor([1, 1], [2], 'int32'))));
      tf.tidy(() => {
        gradient(tf.ones([3, 2]));
      });
    }));
  });
});

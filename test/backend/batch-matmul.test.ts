// Tests the replacement wasm BatchMatMul kernel against the cpu backend (and a plain reference
// where cpu is wrong), over shapes, transposes, batch broadcasting, and through gradients.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '../../src/tf.ts';
import { initBackend } from '../../src/backend/select.ts';
import { broadcastBatchIndices } from '../../src/backend/wasm/batch-matmul.ts';
import { wasmTrainingKernelsRegistered } from '../../src/backend/wasm/kernels.ts';
import { withBackend } from '../../src/backend/with-backend.ts';
import { assertClose, assertNoLeak, onWasmAndCpu, randomValues, take, tidyRead, type Result } from './compare.ts';

const SIZES: Array<[rows: number, inner: number, cols: number]> = [
  [1, 1, 1], [7, 33, 5], [33, 65, 7], [65, 7, 33], [1, 7, 65],
];
const TRANSPOSES: Array<[boolean, boolean]> = [[false, false], [false, true], [true, false], [true, true]];
/** Batch dims of a and b; each pair is one that the cpu backend handles correctly. */
const BATCHES: Array<[number[], number[]]> = [
  [[], []], [[3], []], [[], [3]], [[3], [3]], [[1], [3]], [[3], [1]], [[2, 3], [3]], [[2, 3], [2, 3]],
];

function operandShape(batch: number[], outer: number, inner: number, transposed: boolean): number[] {
  return transposed ? [...batch, inner, outer] : [...batch, outer, inner];
}

function matmulOn(aShape: number[], bShape: number[], transposeA: boolean, transposeB: boolean): () => Result {
  const aValues = randomValues(aShape.reduce((x, y) => x * y, 1), 11);
  const bValues = randomValues(bShape.reduce((x, y) => x * y, 1), 29);
  return () => tidyRead(() => {
    const a = tf.tensor(aValues, aShape);
    const b = tf.tensor(bValues, bShape);
    return take(tf.matMul(a, b, transposeA, transposeB));
  });
}

before(async () => {
  await initBackend('wasm', () => {});
});

describe('wasm BatchMatMul', () => {
  test('backend - the replacement kernels are installed', () => {
    assert.ok(wasmTrainingKernelsRegistered());
  });

  for (const [aBatch, bBatch] of BATCHES) {
    test(`matmul - batch a [${aBatch}] b [${bBatch}] matches cpu for all sizes and transposes`, async () => {
      for (const [rows, inner, cols] of SIZES) {
        for (const [transposeA, transposeB] of TRANSPOSES) {
          const aShape = operandShape(aBatch, rows, inner, transposeA);
          const bShape = operandShape(bBatch, cols, inner, !transposeB);
          const compute = matmulOn(aShape, bShape, transposeA, transposeB);
          const [wasm, cpu] = await onWasmAndCpu(compute);
          assertClose(wasm, cpu, `matMul(a [${aShape}], b [${bShape}], ${transposeA}, ${transposeB})`);
        }
      }
    });
  }

  test('matmul - batch dims broadcast on both sides match a plain reference', async () => {
    // tfjs-backend-cpu 4.22 gets this case wrong (it sizes the output by the larger batch).
    const aShape = [2, 1, 7, 5];
    const bShape = [1, 3, 5, 4];
    const aValues = randomValues(70, 3);
    const bValues = randomValues(60, 4);
    const wasm = await withBackend('wasm', () =>
      tidyRead(() => take(tf.matMul(tf.tensor(aValues, aShape), tf.tensor(bValues, bShape)))));
    const expected = new Float32Array(2 * 3 * 7 * 4);
    for (let i = 0; i < 2; i++) {
      for (let j = 0; j < 3; j++) {
        for (let r = 0; r < 7; r++) {
          for (let c = 0; c < 4; c++) {
            let sum = 0;
            for (let k = 0; k < 5; k++) sum += aValues[i * 35 + r * 5 + k]! * bValues[j * 20 + k * 4 + c]!;
            expected[((i * 3 + j) * 7 + r) * 4 + c] = sum;
          }
        }
      }
    }
    assertClose(wasm, { shape: [2, 3, 7, 4], values: expected }, 'two-sided broadcast');
  });

  test('matmul - broadcastBatchIndices maps output batches to operand batches', () => {
    assert.deepEqual([...broadcastBatchIndices([2, 3], [1, 3])], [0, 1, 2, 0, 1, 2]);
    assert.deepEqual([...broadcastBatchIndices([2, 3], [2, 1])], [0, 0, 0, 1, 1, 1]);
    assert.deepEqual([...broadcastBatchIndices([2, 3], [3])], [0, 1, 2, 0, 1, 2]);
    assert.deepEqual([...broadcastBatchIndices([2, 3], [])], [0, 0, 0, 0, 0, 0]);
  });

  test('matmul - one tensor used as b with two different [inner, cols] splits', async () => {
    // The wasm side caches the packed b per tensor id, and a reshape keeps the id.
    const bValues = randomValues(24, 5);
    const aValues = randomValues(4 * 6, 6);
    const compute = (): Result[] => tidyRead(() => {
      const b = tf.tensor(bValues, [4, 6]);
      const first = tf.matMul(tf.tensor(aValues, [6, 4]), b);
      const second = tf.matMul(tf.tensor(aValues, [4, 6]), b.reshape([6, 4]));
      return [take(first), take(second)];
    });
    const [wasm, cpu] = await onWasmAndCpu(compute);
    assertClose(wasm[0]!, cpu[0]!, 'b as [4,6]');
    assertClose(wasm[1]!, cpu[1]!, 'b reshaped to [6,4]');
  });

  test('matmul - an empty inner dimension gives zeros', async () => {
    const result = await withBackend('wasm', () => take(tf.matMul(tf.zeros([3, 0]), tf.zeros([0, 4]))));
    assert.deepEqual(result.shape, [3, 4]);
    assert.ok(result.values.every((value) => value === 0));
  });

  // Not [3,7,33] . [33,5]: tfjs-core 4.22's BatchMatMul gradient does not reduce broadcast batch
  // dims (it fails on every backend); model code flattens to 2-D before a weight matmul.
  for (const [aShape, bShape] of [[[7, 33], [33, 5]], [[3, 7, 33], [3, 33, 5]], [[1, 65, 7], [1, 7, 33]]]) {
    test(`gradients - tf.grads of matMul a [${aShape}] b [${bShape}] match cpu for all transposes`, async () => {
      for (const [transposeA, transposeB] of TRANSPOSES) {
        const a = transposeA ? [...aShape.slice(0, -2), aShape.at(-1)!, aShape.at(-2)!] : aShape;
        const b = transposeB ? [...bShape.slice(0, -2), bShape.at(-1)!, bShape.at(-2)!] : bShape;
        const aValues = randomValues(a.reduce((x, y) => x * y, 1), 7);
        const bValues = randomValues(b.reduce((x, y) => x * y, 1), 8);
        const compute = (): Result[] => tidyRead(() => {
          const out = tf.matMul(tf.tensor(aValues, a), tf.tensor(bValues, b), transposeA, transposeB);
          const weights = tf.tensor(randomValues(out.size, 9), out.shape);
          const loss = (x: tf.Tensor, y: tf.Tensor) => tf.sum(tf.mul(tf.matMul(x, y, transposeA, transposeB), weights));
          return tf.grads(loss)([tf.tensor(aValues, a), tf.tensor(bValues, b)]).map(take);
        });
        const [wasm, cpu] = await onWasmAndCpu(compute);
        assertClose(wasm[0]!, cpu[0]!, `dA (${transposeA}, ${transposeB})`);
        assertClose(wasm[1]!, cpu[1]!, `dB (${transposeA}, ${transposeB})`);
      }
    });
  }

  test('memory - matmuls of every kind leave no tensors behind', async () => {
    await withBackend('wasm', () => assertNoLeak('matMul', () => {
      for (const [aBatch, bBatch] of BATCHES) {
        for (const [transposeA, transposeB] of TRANSPOSES) {
          const aShape = operandShape(aBatch, 7, 33, transposeA);
          const bShape = operandShape(bBatch, 5, 33, !transposeB);
          matmulOn(aShape, bShape, transposeA, transposeB)();
        }
      }
    }));
  });
});

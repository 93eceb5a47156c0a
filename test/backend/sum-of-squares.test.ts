// Tests the fused wasm sum of squares behind the gradient norm: float64 accuracy over float32 squares,
// tails of 1-3 elements, and that an overflowing square or a NaN still shows (the mixed-precision
// step skips on a non-finite norm).
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '../../src/tf.ts';
import { initBackend } from '../../src/backend/select.ts';
import { withBackend } from '../../src/backend/with-backend.ts';
import { sumOfSquares } from '../../src/train/optimizer.ts';
import { assertNoLeak, randomValues } from './compare.ts';

const SIZES = [1, 3, 4, 7, 50304 * 4 + 3, 1000];

function arrays(): Float32Array[] {
  return SIZES.map((size, i) => randomValues(size, 40 + i).map((x) => x * (i + 1)));
}

async function onBackend(values: Float32Array[]): Promise<number> {
  const tensors = values.map((v) => tf.tensor1d(v));
  try {
    return await sumOfSquares(tensors);
  } finally {
    tf.dispose(tensors);
  }
}

before(async () => {
  await initBackend('wasm', () => {});
});

describe('wasm sum of squares', () => {
  test('sums - match float64 over float32 squares, and the cpu ops', async () => {
    const values = arrays();
    let exact = 0;
    for (const v of values) for (const x of v) exact += Math.fround(x * x);
    const wasm = await withBackend('wasm', () => onBackend(values));
    const cpu = await withBackend('cpu', () => onBackend(values));
    assert.ok(Math.abs(wasm - exact) <= 1e-6 * exact, `wasm ${wasm}, float64 ${exact}`);
    assert.ok(Math.abs(wasm - cpu) <= 1e-5 * exact, `wasm ${wasm}, cpu ${cpu}`);
  });

  test('non-finite - an overflowing square gives Infinity, a NaN gives NaN', async () => {
    const big = Float32Array.from([1, 2e19, 3, 4, 5]);
    const nan = Float32Array.from([1, 2, 3, 4, 5, 6, NaN]);
    await withBackend('wasm', async () => {
      assert.equal(await onBackend([Float32Array.from([1, 2]), big]), Infinity);
      assert.ok(Number.isNaN(await onBackend([nan, Float32Array.from([1])])));
    });
  });

  test('memory - leaves no tensors behind', async () => {
    await withBackend('wasm', () => assertNoLeak('sum of squares', () => onBackend(arrays())));
  });
});

// warmMatmulOperands packs weights ahead of their first product on wasm: the products after it must be
// those of the weights' current values, bit for bit the same as without warming, and a weight replaced
// after warming (an optimizer step) must be used with its new values.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '../../src/tf.ts';
import { initBackend } from '../../src/backend/select.ts';
import { warmMatmulOperands } from '../../src/backend/warm-matmul.ts';
import { randomValues } from './compare.ts';

before(async () => {
  await initBackend('wasm', () => {});
});

after(async () => {
  await initBackend('cpu', () => {});
});

function product(x: tf.Tensor2D, weight: tf.Tensor2D): Float32Array {
  return tf.tidy(() => tf.matMul(x, weight)).dataSync() as Float32Array;
}

test('warm matmul - products after warming equal products without it, bit for bit, and follow a replaced weight', () => {
  assert.equal(tf.getBackend(), 'wasm');
  const x = tf.tensor2d(randomValues(9 * 40, 3), [9, 40]);
  const values = randomValues(40 * 70, 5);
  const cold = tf.tensor2d(values, [40, 70]);
  const expected = product(x, cold);
  const warmed = tf.tensor2d(values, [40, 70]);
  warmMatmulOperands([warmed]);
  assert.deepEqual(product(x, warmed), expected);
  // The optimizer's next weight: a new tensor; warming it must not leave the old packing in use.
  const next = tf.tidy(() => tf.mul(warmed, 2)) as tf.Tensor2D;
  warmMatmulOperands([next]);
  const doubled = product(x, next);
  expected.forEach((value, i) => assert.equal(doubled[i], value * 2, `element ${i}`));
  tf.dispose([x, cold, warmed, next]);
});

test('warm matmul - leaves no tensor behind and refuses a weight that is not 2-D', () => {
  const weight = tf.ones([8, 4]);
  const before = tf.memory().numTensors;
  warmMatmulOperands([weight]);
  assert.equal(tf.memory().numTensors, before);
  const bias = tf.ones([4]);
  assert.throws(() => warmMatmulOperands([bias]), /a matmul weight is 2-D, got shape \[4\]/);
  tf.dispose([weight, bias]);
});

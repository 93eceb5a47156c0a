import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as tf from '../../src/tf.ts';
import { BucketedGradientReduction } from '../../src/train/bucketed-reduction.ts';

/** An all-reduce of one rank that records the ranges it was given and doubles them in place. */
function recordingAllReduce(flatOf: () => Float32Array, seen: Array<[number, number]>) {
  return async (values: Float32Array) => {
    const start = (values.byteOffset - flatOf().byteOffset) / 4;
    seen.push([start, start + values.length]);
    await new Promise((resolve) => setImmediate(resolve));
    for (let i = 0; i < values.length; i++) values[i] *= 2;
    return values;
  };
}

test('bucketed reduction - buckets cut from the end, each reduced once its parameters arrived, in order, in place', async () => {
  const seen: Array<[number, number]> = [];
  // 12-byte buckets, filled from the end: [c, loss] (16 bytes), then b (8 bytes, not full) takes a too.
  const reduction: BucketedGradientReduction = new BucketedGradientReduction(['a', 'b', 'c'], [4, 2, 3], recordingAllReduce(() => reduction.flat, seen), 12);
  const tensors = { a: tf.tensor1d([1, 2, 3, 4]), b: tf.tensor1d([5, 6]), c: tf.tensor1d([7, 8, 9]) };
  reduction.setLoss(10);
  reduction.setGradient('c', tensors.c);
  assert.equal(seen.length, 0, 'nothing goes before the event loop runs');
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(seen, [[6, 10]], 'the loss and c, the last parameter, first');
  reduction.setGradient('b', tensors.b);
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(seen.length, 1, 'the bucket of b waits for a');
  reduction.setGradient('a', tensors.a);
  const reduced = await reduction.finish();
  assert.equal(reduced, reduction.flat);
  assert.deepEqual(seen, [[6, 10], [0, 6]]);
  assert.deepEqual(Array.from(reduced), [2, 4, 6, 8, 10, 12, 14, 16, 18, 20]);
  tf.dispose(Object.values(tensors));
});

test('bucketed reduction - refuses unknown, repeated and mis-sized gradients, and names what never arrived', async () => {
  const reduction = new BucketedGradientReduction(['a', 'b'], [2, 2], async (values) => values, 8);
  const two = tf.tensor1d([1, 2]);
  const three = tf.tensor1d([1, 2, 3]);
  assert.throws(() => reduction.setGradient('z', two), /z is not a parameter of this reduction, or was given twice/);
  assert.throws(() => reduction.setGradient('a', three), /a has 3 values, the layout holds 2/);
  reduction.setGradient('a', two);
  assert.throws(() => reduction.setGradient('a', two), /a is not a parameter of this reduction, or was given twice/);
  await assert.rejects(reduction.finish(), /nothing given for b, the loss: the backward did not reach it/);
  tf.dispose([two, three]);
});

test('bucketed reduction - a failed all-reduce fails finish, not the process', async () => {
  const reduction = new BucketedGradientReduction(['a'], [2], async () => {
    throw new Error('peer gone');
  });
  const a = tf.tensor1d([1, 2]);
  reduction.setGradient('a', a);
  reduction.setLoss(1);
  await new Promise((resolve) => setImmediate(resolve));
  await assert.rejects(reduction.finish(), /peer gone/);
  a.dispose();
});

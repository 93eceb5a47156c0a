import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { initBackend } from '../../src/backend/select.ts';
import { crossEntropy } from '../../src/model/layers.ts';
import { runOverGroup } from '../../src/tensor-parallel/collective-steps.ts';
import { maskedLookup, vocabParallelCrossEntropySteps } from '../../src/tensor-parallel/vocab-parallel.ts';
import * as tf from '../../src/tf.ts';
import { makeGroups } from './tp-helpers.ts';

before(async () => {
  await initBackend('cpu', () => {});
});

const ROWS = 6;
const VOCAB = 24;
const logitValues = Float32Array.from({ length: ROWS * VOCAB }, (_, i) => Math.sin(i * 1.7) * 4);
// Labels in every rank's range, including the first and last id.
const labels = Int32Array.from([0, 23, 5, 12, 17, 8]);

test('vocab-parallel cross-entropy equals the plain one, loss and logit gradient, for tp 2, 3 and 4', async () => {
  const full = tf.tensor2d(logitValues, [ROWS, VOCAB]);
  const labelTensor = tf.tensor1d(labels, 'int32');
  const expectedLoss = tf.tidy(() => crossEntropy(full, labelTensor).dataSync()[0]);
  const expectedGrad = tf.tidy(() => tf.grad((x: tf.Tensor) => crossEntropy(x as tf.Tensor2D, labelTensor))(full));
  for (const tp of [2, 3, 4]) {
    const { groups: members, close } = makeGroups(tp);
    const width = VOCAB / tp;
    const before = tf.memory().numTensors;
    const grads = await Promise.all(
      members.map(async (group, rank) => {
        const local = tf.slice(full, [0, rank * width], [ROWS, width]) as tf.Tensor2D;
        const { losses, dLogits } = await runOverGroup(group, vocabParallelCrossEntropySteps(local, labels, { start: rank * width, size: width }, 1 / ROWS));
        local.dispose();
        const loss = tf.tidy(() => tf.mean(losses).dataSync()[0]);
        losses.dispose();
        assert.ok(Math.abs(loss - expectedLoss) <= 1e-6 * expectedLoss, `tp=${tp} rank ${rank}: loss ${loss} vs ${expectedLoss}`);
        return dLogits;
      }),
    );
    const joined = tf.concat(grads, 1);
    const maxDiff = tf.tidy(() => tf.max(tf.abs(tf.sub(joined, expectedGrad))).dataSync()[0]);
    assert.ok(maxDiff <= 1e-7, `tp=${tp}: logit gradient differs by ${maxDiff}`);
    joined.dispose();
    grads.forEach((g) => g.dispose());
    assert.equal(tf.memory().numTensors, before, `tp=${tp}: leaked tensors`);
    await close();
  }
  full.dispose();
  labelTensor.dispose();
  expectedGrad.dispose();
});

test('vocab-parallel lookup: the shards\' masked rows sum to the plain lookup', () => {
  tf.tidy(() => checkLookup());
});

function checkLookup(): void {
  const table = tf.tensor2d(Float32Array.from({ length: VOCAB * 4 }, (_, i) => i + 1), [VOCAB, 4]);
  const ids = Int32Array.from([0, 7, 23, 12, 12, 5]);
  const expected = tf.gather(table, tf.tensor1d(ids, 'int32'));
  const tp = 4;
  const width = VOCAB / tp;
  const parts = Array.from({ length: tp }, (_, rank) => {
    const shard = tf.slice(table, [rank * width, 0], [width, 4]) as tf.Tensor2D;
    const part = maskedLookup(shard, ids, { start: rank * width, size: width });
    // A rank's rows are zero exactly where another rank owns the id.
    const rowOwned = Array.from(ids, (id) => id >= rank * width && id < (rank + 1) * width);
    const values = part.arraySync();
    rowOwned.forEach((owned, row) => assert.equal(values[row].some((v) => v !== 0), owned, `rank ${rank} row ${row}`));
    return part;
  });
  assert.deepEqual(tf.addN(parts).arraySync(), expected.arraySync());
}

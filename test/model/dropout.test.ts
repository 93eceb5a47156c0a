import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { initBackend } from '../../src/backend/select.ts';
import { DropoutSite, dropoutMask } from '../../src/model/dropout.ts';
import * as tf from '../../src/tf.ts';

before(async () => {
  await initBackend('cpu', () => {});
});

const rowsOf = (mask: tf.Tensor) => {
  const values = Array.from(mask.dataSync());
  const perRow = values.length / mask.shape[0];
  return Array.from({ length: mask.shape[0] }, (_, r) => values.slice(r * perRow, (r + 1) * perRow));
};

test('dropout - a sample gets the same mask wherever it sits in a batch (any data/pipeline split)', () => {
  const together = dropoutMask({ seed: 1, step: 3, sampleIds: Int32Array.from([5, 9, 12]) }, 0.25, 2, DropoutSite.MlpOutput, [4, 8]);
  const alone = dropoutMask({ seed: 1, step: 3, sampleIds: Int32Array.from([9]) }, 0.25, 2, DropoutSite.MlpOutput, [4, 8]);
  assert.deepEqual(rowsOf(alone)[0], rowsOf(together)[1]);
  tf.dispose([together, alone]);
});

test('dropout - keyed by step, layer and site; rate and scale honoured', () => {
  const ctx = { seed: 1, step: 0, sampleIds: Int32Array.from([0]) };
  const base = rowsOf(dropoutMask(ctx, 0.5, 0, DropoutSite.AttentionProbs, [64, 64]))[0];
  for (const other of [
    dropoutMask({ ...ctx, step: 1 }, 0.5, 0, DropoutSite.AttentionProbs, [64, 64]),
    dropoutMask(ctx, 0.5, 1, DropoutSite.AttentionProbs, [64, 64]),
    dropoutMask(ctx, 0.5, 0, DropoutSite.AttentionOutput, [64, 64]),
  ]) {
    assert.notDeepEqual(rowsOf(other)[0], base);
  }
  assert.ok(base.every((v) => v === 0 || v === 2));
  const kept = base.filter((v) => v === 2).length / base.length;
  assert.ok(Math.abs(kept - 0.5) < 0.03, `kept ${kept}`);
});

// Tests the fused wasm softmax cross-entropy (each row's loss and (softmax - onehot) * scale) against
// a float64 reference and the tf-op formulation on cpu, with vocabularies that leave tails of 1-3.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '../../src/tf.ts';
import { initBackend } from '../../src/backend/select.ts';
import { withBackend } from '../../src/backend/with-backend.ts';
import { softmaxCrossEntropy } from '../../src/model/manual/primitives.ts';
import { assertClose, assertNoLeak, randomValues, take, tidyRead, type Result } from './compare.ts';

/** Logits spread over +-scale (wide rows exercise exp far below the max), labels spread over the vocabulary. */
function inputs(rows: number, vocab: number, scale: number): { logits: Float32Array; labels: Int32Array } {
  const logits = randomValues(rows * vocab, rows + vocab).map((x) => x * scale);
  const labels = Int32Array.from({ length: rows }, (_, r) => (r * 7919 + 3) % vocab);
  return { logits, labels };
}

function run(rows: number, vocab: number, scale: number, gradScale: number): { losses: Result; dLogits: Result } {
  const { logits, labels } = inputs(rows, vocab, scale);
  return tidyRead(() => {
    const out = softmaxCrossEntropy(tf.tensor2d(logits, [rows, vocab]), tf.tensor1d(labels, 'int32'), gradScale);
    return { losses: take(out.losses), dLogits: take(out.dLogits) };
  });
}

/** The same in float64. */
function reference(rows: number, vocab: number, scale: number, gradScale: number): { losses: Result; dLogits: Result } {
  const { logits, labels } = inputs(rows, vocab, scale);
  const losses = new Float32Array(rows);
  const dLogits = new Float32Array(rows * vocab);
  for (let r = 0; r < rows; r++) {
    const row = logits.subarray(r * vocab, (r + 1) * vocab);
    const max = Math.max(...row);
    let sum = 0;
    for (const x of row) sum += Math.exp(x - max);
    losses[r] = Math.log(sum) - (row[labels[r]!]! - max);
    for (let v = 0; v < vocab; v++) dLogits[r * vocab + v] = (Math.exp(row[v]! - max) / sum - (v === labels[r] ? 1 : 0)) * gradScale;
  }
  return { losses: { shape: [rows], values: losses }, dLogits: { shape: [rows, vocab], values: dLogits } };
}

const CASES: Array<[rows: number, vocab: number, scale: number]> = [[5, 37, 3], [3, 50304, 8], [4, 1001, 40], [2, 6, 1], [1, 3, 100]];

before(async () => {
  await initBackend('wasm', () => {});
});

describe('wasm softmax cross-entropy', () => {
  test('rows - losses and gradients match float64 and the cpu ops', async () => {
    for (const [rows, vocab, scale] of CASES) {
      const what = `[${rows}, ${vocab}] logits in +-${scale}`;
      const gradScale = 1 / rows;
      const wasm = await withBackend('wasm', () => run(rows, vocab, scale, gradScale));
      const cpu = await withBackend('cpu', () => run(rows, vocab, scale, gradScale));
      const exact = reference(rows, vocab, scale, gradScale);
      assertClose(wasm.losses, exact.losses, `${what}: losses against float64`, 1e-6);
      assertClose(wasm.dLogits, exact.dLogits, `${what}: gradient against float64`, 1e-6);
      assertClose(wasm.losses, cpu.losses, `${what}: losses against cpu`, 1e-6);
      assertClose(wasm.dLogits, cpu.dLogits, `${what}: gradient against cpu`, 1e-6);
      // Each gradient row sums to zero (the softmax sums to one, the one-hot too), up to a float32 sum's
      // rounding over 50304 terms; a misplaced one-hot would leave gradScale.
      for (let r = 0; r < rows; r++) {
        let sum = 0;
        for (const value of wasm.dLogits.values.subarray(r * vocab, (r + 1) * vocab)) sum += value;
        assert.ok(Math.abs(sum) < 1e-4 * gradScale, `${what}: row ${r} of the gradient sums to ${sum}`);
      }
    }
  });

  test('labels - one outside the vocabulary is an error naming it', async () => {
    await withBackend('wasm', () => {
      assert.throws(() => tf.tidy(() => {
        softmaxCrossEntropy(tf.zeros([2, 8]) as tf.Tensor2D, tf.tensor1d([3, 8], 'int32'), 1);
      }), /label 8 of row 1 is outside the vocabulary \[0, 8\)/);
    });
  });

  test('memory - leaves no tensors behind, also when it throws', async () => {
    await withBackend('wasm', () => assertNoLeak('softmax cross-entropy', () => {
      run(4, 1001, 5, 0.25);
      try {
        tf.tidy(() => softmaxCrossEntropy(tf.zeros([1, 4]) as tf.Tensor2D, tf.tensor1d([-1], 'int32'), 1));
      } catch {
        // expected: the label is out of range
      }
    }));
  });
});

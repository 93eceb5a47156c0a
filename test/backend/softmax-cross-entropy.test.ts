// Tests the LM head's fused cross-entropy on wasm (transposed logits, the SIMD softmax kernel, rows
// padded to a multiple of 4) against float64 and the tf-op formulation on cpu: each row's loss, the
// gradient of the head's input and of the tied weight, with vocabularies that leave tails of 1-3.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '../../src/tf.ts';
import { initBackend } from '../../src/backend/select.ts';
import { withBackend } from '../../src/backend/with-backend.ts';
import { lmHeadCrossEntropy } from '../../src/model/manual/primitives.ts';
import { assertClose, assertNoLeak, randomValues, take, tidyRead, type Result } from './compare.ts';

interface Case { rows: number; vocab: number; hidden: number; spread: number }

/** Logits spread over about +-spread (wide rows exercise exp far below the max), labels over the vocabulary. */
function inputs({ rows, vocab, hidden, spread }: Case): { normed: Float32Array; weight: Float32Array; labels: Int32Array } {
  const normed = randomValues(rows * hidden, rows + vocab).map((x) => x * spread);
  const weight = randomValues(vocab * hidden, vocab + 1);
  const labels = Int32Array.from({ length: rows }, (_, r) => (r * 7919 + 3) % vocab);
  return { normed, weight, labels };
}

type HeadResult = { losses: Result; dNormed: Result; dWeight: Result };

function run(c: Case, gradScale: number): HeadResult {
  const { normed, weight, labels } = inputs(c);
  return tidyRead(() => {
    const out = lmHeadCrossEntropy(tf.tensor2d(normed, [c.rows, c.hidden]), tf.tensor2d(weight, [c.vocab, c.hidden]), tf.tensor1d(labels, 'int32'), gradScale);
    return { losses: take(out.losses), dNormed: take(out.dNormed), dWeight: take(out.dWordEmbedding) };
  });
}

/** The same in float64. */
function reference(c: Case, gradScale: number): HeadResult {
  const { rows, vocab, hidden } = c;
  const { normed, weight, labels } = inputs(c);
  const losses = new Float32Array(rows);
  const dNormed = new Float64Array(rows * hidden);
  const dWeight = new Float64Array(vocab * hidden);
  for (let r = 0; r < rows; r++) {
    const logits = Array.from({ length: vocab }, (_, v) => {
      let dot = 0;
      for (let h = 0; h < hidden; h++) dot += normed[r * hidden + h]! * weight[v * hidden + h]!;
      return dot;
    });
    const max = Math.max(...logits);
    let sum = 0;
    for (const l of logits) sum += Math.exp(l - max);
    losses[r] = Math.log(sum) - (logits[labels[r]!]! - max);
    for (let v = 0; v < vocab; v++) {
      const d = (Math.exp(logits[v]! - max) / sum - (v === labels[r] ? 1 : 0)) * gradScale;
      for (let h = 0; h < hidden; h++) {
        dNormed[r * hidden + h] += d * weight[v * hidden + h]!;
        dWeight[v * hidden + h] += d * normed[r * hidden + h]!;
      }
    }
  }
  return {
    losses: { shape: [rows], values: losses },
    dNormed: { shape: [rows, hidden], values: Float32Array.from(dNormed) },
    dWeight: { shape: [vocab, hidden], values: Float32Array.from(dWeight) },
  };
}

const CASES: Case[] = [
  { rows: 5, vocab: 37, hidden: 8, spread: 3 }, { rows: 4, vocab: 50304, hidden: 4, spread: 8 },
  { rows: 21, vocab: 1001, hidden: 16, spread: 20 }, { rows: 2, vocab: 6, hidden: 4, spread: 1 },
  { rows: 1, vocab: 3, hidden: 4, spread: 100 }, { rows: 36, vocab: 64, hidden: 8, spread: 4 },
];

before(async () => {
  await initBackend('wasm', () => {});
});

describe('LM head cross-entropy on wasm', () => {
  test('rows - losses and gradients match float64 and the cpu ops', async () => {
    for (const c of CASES) {
      const what = `rows ${c.rows}, vocab ${c.vocab}, hidden ${c.hidden}, spread ${c.spread}`;
      const gradScale = 1 / c.rows;
      const wasm = await withBackend('wasm', () => run(c, gradScale));
      const cpu = await withBackend('cpu', () => run(c, gradScale));
      const exact = reference(c, gradScale);
      for (const key of ['losses', 'dNormed', 'dWeight'] as const) {
        assertClose(wasm[key], exact[key], `${what}: ${key} against float64`, key === 'losses' ? 1e-6 : 1e-5);
        assertClose(wasm[key], cpu[key], `${what}: ${key} against cpu`, 1e-5);
      }
    }
  });

  test('labels - one outside the vocabulary is an error naming it', async () => {
    await withBackend('wasm', () => {
      assert.throws(() => tf.tidy(() => {
        lmHeadCrossEntropy(tf.zeros([2, 4]) as tf.Tensor2D, tf.zeros([8, 4]) as tf.Tensor2D, tf.tensor1d([3, 8], 'int32'), 1);
      }), /label 8 of row 1 is outside the vocabulary \[0, 8\)/);
    });
  });

  test('memory - leaves no tensors behind, also when it throws', async () => {
    await withBackend('wasm', () => assertNoLeak('LM head cross-entropy', () => {
      run(CASES[2]!, 0.25);
      try {
        tf.tidy(() => lmHeadCrossEntropy(tf.zeros([1, 4]) as tf.Tensor2D, tf.zeros([4, 4]) as tf.Tensor2D, tf.tensor1d([-1], 'int32'), 1));
      } catch {
        // expected: the label is out of range
      }
    }));
  });
});

// Tests that a whole GPT training loss and every parameter gradient agree between wasm (with
// this project's kernels) and cpu, and that a step leaks no tensors.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '../../src/tf.ts';
import { initBackend } from '../../src/backend/select.ts';
import { withBackend } from '../../src/backend/with-backend.ts';
import { assertClose, assertNoLeak, onWasmAndCpu, take, tidyRead, type Result } from './compare.ts';
import { tinyGptIds, tinyGptLoss, tinyGptParams, type TinyGptShape } from './tiny-gpt.ts';

const SHAPE: TinyGptShape = { vocab: 29, hidden: 16, heads: 2, layers: 2, seqLen: 8, batch: 3 };
const PARAMS = tinyGptParams(SHAPE, 100);
const IDS = tinyGptIds(SHAPE, 7);
const NAMES = [...PARAMS.keys()];

function lossAndGradients(): { loss: Result; grads: Result[] } {
  return tidyRead(() => {
    const ids = tf.tensor2d(IDS, [SHAPE.batch, SHAPE.seqLen], 'int32');
    const tensors = NAMES.map((name) => tf.tensor(PARAMS.get(name)!.values, PARAMS.get(name)!.shape));
    const lossOf = (...values: tf.Tensor[]) => tinyGptLoss(SHAPE, new Map(NAMES.map((name, i) => [name, values[i]!])), ids);
    const { value, grads } = tf.valueAndGrads(lossOf)(tensors);
    return { loss: take(value), grads: grads.map(take) };
  });
}

before(async () => {
  await initBackend('wasm', () => {});
});

describe('GPT training step on wasm', () => {
  test('gpt - loss and every parameter gradient match cpu', async () => {
    const [wasm, cpu] = await onWasmAndCpu(lossAndGradients);
    assertClose(wasm.loss, cpu.loss, 'loss');
    // Near ln(29) = 3.37 for a model this close to uniform: the loss is a real cross-entropy.
    assert.ok(Math.abs(wasm.loss.values[0]! - Math.log(SHAPE.vocab)) < 1, `loss ${wasm.loss.values[0]}`);
    NAMES.forEach((name, i) => assertClose(wasm.grads[i]!, cpu.grads[i]!, `d loss / d ${name}`, 2e-4));
  });

  test('memory - a training step leaves no tensors behind', async () => {
    await withBackend('wasm', () => assertNoLeak('gpt step', lossAndGradients));
  });
});

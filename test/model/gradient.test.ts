import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { initBackend } from '../../src/backend/select.ts';
import { GPT } from '../../src/model/gpt.ts';
import { attentionBias } from '../../src/model/layers.ts';
import { fullModelSlice } from '../../src/model/params.ts';
import * as tf from '../../src/tf.ts';
import { tinyBatch, tinyConfig } from './helpers.ts';

before(async () => {
  await initBackend('cpu', () => {});
});

/**
 * Directional finite differences: for each parameter p and a random direction d,
 * (L(p + h·d) - L(p - h·d)) / 2h must equal <dL/dp, d>. A direction sums thousands of partials, which
 * keeps float32 rounding far below the tolerance where single-element differences would drown in it.
 */
test('gpt - gradient of every parameter matches central finite differences', () => {
  const config = tinyConfig({ numLayers: 2, hiddenSize: 16, numAttentionHeads: 2, vocabSize: 29 });
  const model = new GPT(config, fullModelSlice(config), 5);
  const batch = tinyBatch(config, 2, 8, 6);
  const variables = model.variables();
  const { grads } = tf.variableGrads(() => model.loss(batch), variables);
  const h = 1e-3;
  let checked = 0;
  for (const [index, spec] of model.specs.entries()) {
    const variable = variables[index];
    const original = variable.clone();
    const direction = tf.randomNormal(variable.shape, 0, 1, 'float32', 1000 + index);
    const analytic = tf.sum(tf.mul(grads[variable.name], direction)).dataSync()[0];
    const lossAt = (sign: number) => {
      variable.assign(tf.add(original, tf.mul(direction, sign * h)));
      return tf.tidy(() => model.loss(batch).dataSync()[0]);
    };
    const numeric = (lossAt(1) - lossAt(-1)) / (2 * h);
    variable.assign(original);
    original.dispose();
    direction.dispose();
    const tolerance = 2e-3 + 2e-2 * Math.abs(analytic);
    assert.ok(
      Math.abs(numeric - analytic) <= tolerance,
      `${spec.name}: finite difference ${numeric} vs gradient ${analytic}`,
    );
    checked++;
  }
  assert.equal(checked, variables.length);
  for (const grad of Object.values(grads)) grad.dispose();
  model.dispose();
});

test('gpt - loss at init is near ln(vocab), padding changes it, causality holds', () => {
  const config = tinyConfig({ vocabSize: 31 });
  const model = new GPT(config, fullModelSlice(config), 1);
  const loss = (b: ReturnType<typeof tinyBatch>) => tf.tidy(() => model.loss(b).dataSync()[0]);
  const full = tinyBatch(config, 2, 8);
  assert.ok(Math.abs(loss(full) - Math.log(31)) < 0.2, `loss ${loss(full)}`);
  // Causal attention: changing the last token leaves the hidden states of every earlier position as they were.
  const changed = { ...full, inputIds: full.inputIds.slice() };
  changed.inputIds[7] = (changed.inputIds[7] + 1) % 31;
  const hidden = (b: typeof full, positions: number) =>
    tf.tidy(() => {
      const ids = tf.tensor2d(b.inputIds, [b.batch, b.seqLen], 'int32');
      const bias = attentionBias(b.attentionMask, b.batch, b.seqLen);
      const x = model.block(1, model.block(0, model.embed(ids, {}), bias, {}), bias, {});
      return Array.from(tf.slice(x, [0, 0, 0], [1, positions, config.hiddenSize]).dataSync());
    });
  assert.deepEqual(hidden(changed, 7), hidden(full, 7));
  assert.notDeepEqual(hidden(changed, 8), hidden(full, 8));
  const padded = tinyBatch(config, 2, 8, 5);
  assert.notEqual(loss(padded), loss(full));
  model.dispose();
});

test('gpt - a forward/backward step leaves no tensor behind', () => {
  const config = tinyConfig();
  const model = new GPT(config, fullModelSlice(config), 1);
  const batch = tinyBatch(config, 2, 8, 6);
  const run = () => {
    const { value, grads } = tf.variableGrads(() => model.loss(batch), model.variables());
    value.dispose();
    for (const grad of Object.values(grads)) grad.dispose();
  };
  run();
  const before = tf.memory().numTensors;
  for (let i = 0; i < 3; i++) run();
  assert.equal(tf.memory().numTensors, before);
  model.dispose();
});

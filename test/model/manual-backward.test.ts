import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { initBackend } from '../../src/backend/select.ts';
import type { GPTConfig } from '../../src/model/config.ts';
import { GPT, type TokenBatch } from '../../src/model/gpt.ts';
import type { DropoutContext } from '../../src/model/dropout.ts';
import { modelLossAndGrads, sliceBackward, sliceForward } from '../../src/model/manual/slice.ts';
import { geluBackward, geluForward } from '../../src/model/manual/primitives.ts';
import { geluExact } from '../../src/model/layers.ts';
import { fullModelSlice, sliceForLayers } from '../../src/model/params.ts';
import * as tf from '../../src/tf.ts';
import { tinyBatch, tinyConfig } from './helpers.ts';

before(async () => {
  await initBackend('cpu', () => {});
});

const RELATIVE_TOLERANCE = 1e-4;

/** Autodiff's loss and gradients by global name, the reference. */
function autodiff(model: GPT, batch: TokenBatch, dropout?: DropoutContext): { loss: number; grads: Map<string, Float32Array> } {
  const variables = model.variables();
  const { value, grads } = tf.variableGrads(() => model.loss(batch, { dropout }), variables);
  const named = new Map(model.specs.map((spec, i) => [spec.name, grads[variables[i].name].dataSync() as Float32Array]));
  const loss = value.dataSync()[0];
  value.dispose();
  tf.dispose(Object.values(grads));
  return { loss, grads: named };
}

/**
 * llm.c test_gpt2 style: every parameter's max |manual - autodiff| against the largest reference
 * magnitude; the failure message lists every parameter's difference.
 */
function assertGradsMatch(expected: Map<string, Float32Array>, actual: Map<string, tf.Tensor>, label: string): void {
  assert.deepEqual([...actual.keys()], [...expected.keys()], `${label}: gradient names and order`);
  const lines: string[] = [];
  let failed = false;
  for (const [name, reference] of expected) {
    const values = actual.get(name)!.dataSync();
    assert.equal(values.length, reference.length, `${label}: ${name} size`);
    let maxDiff = 0;
    let scale = 0;
    for (let i = 0; i < reference.length; i++) {
      maxDiff = Math.max(maxDiff, Math.abs(values[i] - reference[i]));
      scale = Math.max(scale, Math.abs(reference[i]));
    }
    const ok = maxDiff <= RELATIVE_TOLERANCE * scale + 1e-9 && scale > 0;
    failed ||= !ok;
    lines.push(`${ok ? 'OK ' : 'BAD'} ${name}: max diff ${maxDiff.toExponential(2)} of max |grad| ${scale.toExponential(2)}`);
  }
  assert.ok(!failed, `${label}: gradients differ from autodiff\n${lines.join('\n')}`);
}

function checkFullModel(config: GPTConfig, batch: TokenBatch, label: string, dropout?: DropoutContext): void {
  const model = new GPT(config, fullModelSlice(config), 3);
  const reference = autodiff(model, batch, dropout);
  const { loss, grads } = modelLossAndGrads(model, batch, { dropout });
  const manualLoss = loss.dataSync()[0];
  assert.ok(Math.abs(manualLoss - reference.loss) <= 1e-6 * Math.abs(reference.loss), `${label}: loss ${manualLoss} vs autodiff ${reference.loss}`);
  assertGradsMatch(reference.grads, grads, label);
  loss.dispose();
  tf.dispose([...grads.values()]);
  model.dispose();
}

test('manual backward - every gradient and the loss match autodiff, without padding', () => {
  const config = tinyConfig({ numLayers: 2, hiddenSize: 16, numAttentionHeads: 2, vocabSize: 37, maxPositionEmbeddings: 12 });
  checkFullModel(config, tinyBatch(config, 3, 8), 'no padding');
});

test('manual backward - every gradient and the loss match autodiff, with padding', () => {
  const config = tinyConfig({ numLayers: 3, hiddenSize: 24, numAttentionHeads: 3, vocabSize: 41, maxPositionEmbeddings: 10 });
  checkFullModel(config, tinyBatch(config, 2, 10, 6), 'padding');
});

test('manual backward - the exact (erf) GELU of the seed\'s presets: every gradient and the loss match autodiff, and differ from the tanh form', () => {
  const exact = tinyConfig({ numLayers: 2, hiddenSize: 16, numAttentionHeads: 2, vocabSize: 37, maxPositionEmbeddings: 12, activation: 'gelu' });
  const batch = tinyBatch(exact, 2, 8);
  checkFullModel(exact, batch, 'exact GELU');
  const loss = (activation: 'gelu' | 'gelu_tanh') => {
    const model = new GPT({ ...exact, activation }, fullModelSlice(exact), 3);
    // At init the pre-activations are ~0.01, where the two forms agree to float32: widen them.
    const fc1 = model.param('blocks.0.mlp.fc1.weight');
    tf.tidy(() => fc1.assign(tf.mul(fc1, 100)));
    const value = tf.tidy(() => model.loss(batch).dataSync()[0]!);
    model.dispose();
    return value;
  };
  assert.notEqual(loss('gelu'), loss('gelu_tanh'), 'the activation reaches the model');
});

test('manual backward - the exact GELU\'s derivative over [-3, 3] is autodiff\'s, and not the tanh form\'s', () => {
  tf.tidy(() => {
    const x = tf.linspace(-3, 3, 61);
    const auto = tf.grad((t: tf.Tensor) => geluExact(t))(x).dataSync();
    const exact = geluBackward(tf.onesLike(x), geluForward(x, 'gelu').saved).dataSync();
    const tanh = geluBackward(tf.onesLike(x), geluForward(x, 'gelu_tanh').saved).dataSync();
    const worst = (a: ArrayLike<number>, b: ArrayLike<number>) => Math.max(...Array.from(a, (v, i) => Math.abs(v - b[i]!)));
    assert.ok(worst(exact, auto) < 1e-5, `exact vs autodiff ${worst(exact, auto)}`);
    assert.ok(worst(tanh, auto) > 1e-4, `the tanh form's derivative differs: ${worst(tanh, auto)}`);
  });
});

test('manual backward - with every dropout site active, gradients match autodiff under the same masks', () => {
  const config = tinyConfig({ embedDropRate: 0.1, attnDropRate: 0.2, dropRate: 0.15 });
  const batch = tinyBatch(config, 2, 8, 6);
  checkFullModel(config, batch, 'dropout', { seed: 7, step: 3, sampleIds: batch.sampleIds });
});

test('manual backward - on wasm with the project kernels, gradients match wasm autodiff, with padding', async () => {
  // initBackend installs the project's wasm kernels (UnsortedSegmentSum, BatchMatMul, ...).
  await initBackend('wasm', () => {});
  try {
    assert.equal(tf.getBackend(), 'wasm');
    const config = tinyConfig({ numLayers: 2, hiddenSize: 32, numAttentionHeads: 4, vocabSize: 53, maxPositionEmbeddings: 12 });
    checkFullModel(config, tinyBatch(config, 3, 9, 7), 'wasm padding');
  } finally {
    await initBackend('cpu', () => {});
  }
});

test('manual backward - pipeline slices chained by hand equal the whole model, input gradients included', () => {
  const config = tinyConfig({ numLayers: 3 });
  const batch = tinyBatch(config, 2, 8, 5);
  const whole = new GPT(config, fullModelSlice(config), 3);
  const reference = autodiff(whole, batch);
  const first = new GPT(config, sliceForLayers(config, 0, 1), 3);
  const middle = new GPT(config, sliceForLayers(config, 1, 2), 3);
  const last = new GPT(config, sliceForLayers(config, 2, 3), 3);
  const f1 = sliceForward(first, batch, undefined);
  const f2 = sliceForward(middle, batch, f1.output as tf.Tensor3D);
  const f3 = sliceForward(last, batch, f2.output as tf.Tensor3D);
  assert.ok(Math.abs(f3.output.dataSync()[0] - reference.loss) <= 1e-6 * reference.loss);
  const b3 = sliceBackward(last, f3.saved);
  const b2 = sliceBackward(middle, f2.saved, b3.inputGrad);
  const b1 = sliceBackward(first, f1.saved, b2.inputGrad);
  assert.equal(b1.inputGrad, undefined);
  // The tied word embedding: the first and last stage each hold a copy; their gradients sum to the model's.
  const combined = new Map<string, tf.Tensor>();
  for (const spec of whole.specs) {
    const parts = [b1.grads, b2.grads, b3.grads].map((g) => g.get(spec.name)).filter((g) => g !== undefined);
    combined.set(spec.name, parts.length === 1 ? parts[0] : tf.addN(parts));
  }
  assertGradsMatch(reference.grads, combined, 'three stages');
  tf.dispose([f1.output, f2.output, f3.output, b3.inputGrad!, b2.inputGrad!, ...combined.values()]);
  for (const g of [b1.grads, b2.grads, b3.grads]) tf.dispose([...g.values()]);
  for (const m of [whole, first, middle, last]) m.dispose();
});

test('manual backward - lossGrad scales every gradient of a slice with the head (a loss averaged over micro-batches)', () => {
  const config = tinyConfig();
  const batch = tinyBatch(config, 2, 8, 6);
  const model = new GPT(config, fullModelSlice(config), 3);
  const reference = autodiff(model, batch);
  const { output, saved } = sliceForward(model, batch, undefined, { lossGrad: 0.25 });
  const { grads } = sliceBackward(model, saved);
  const quarter = new Map([...reference.grads].map(([name, values]) => [name, values.map((v) => v * 0.25)]));
  assertGradsMatch(quarter, grads, 'lossGrad 0.25');
  tf.dispose([output, ...grads.values()]);
  model.dispose();
});

test('manual backward - a stage refuses an output gradient of the wrong shape, naming both shapes', () => {
  const config = tinyConfig();
  const batch = tinyBatch(config, 2, 8);
  const first = new GPT(config, sliceForLayers(config, 0, 1), 3);
  const forward = sliceForward(first, batch, undefined);
  const wrong = tf.zeros([2, 7, config.hiddenSize]) as tf.Tensor3D;
  assert.throws(() => sliceBackward(first, forward.saved, wrong), /outputGrad has shape \[2,7,16\].*\[2,8,16\]/);
  tf.dispose([wrong, forward.output]);
  first.dispose();
});

test('manual backward - repeated calls leave no tensor behind', () => {
  const config = tinyConfig();
  const model = new GPT(config, fullModelSlice(config), 1);
  const batch = tinyBatch(config, 2, 8, 6);
  const run = () => {
    const { loss, grads } = modelLossAndGrads(model, batch);
    loss.dispose();
    tf.dispose([...grads.values()]);
  };
  run();
  const before = tf.memory().numTensors;
  for (let i = 0; i < 3; i++) run();
  assert.equal(tf.memory().numTensors, before);
  model.dispose();
});

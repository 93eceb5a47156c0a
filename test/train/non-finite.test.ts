// Tests: the non-finite policy of the float32 trainer (config nonFinite): "error" stops at the step with
// the weights and Adam state untouched, "skip" drops the update on every data-parallel rank and counts it.
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { initBackend } from '../../src/backend/select.ts';
import type { TrainConfig } from '../../src/config/types.ts';
import { GPT } from '../../src/model/gpt.ts';
import { fullModelSlice } from '../../src/model/params.ts';
import * as tf from '../../src/tf.ts';
import { NonFiniteGuard, NonFiniteStepError, describeNonFinite } from '../../src/train/non-finite.ts';
import { Trainer, type DataParallelRole } from '../../src/train/trainer.ts';
import { inProcessAllReduce, patternDataset, tinyTrainConfig } from './trainer-helpers.ts';

before(async () => {
  await initBackend('cpu', () => {});
});

/** Adam moves every weight by about lr in its first step: 1e30 makes step 2's forward overflow. */
const DIVERGING = { optimizer: { lr: 1e30 } };

/** Every parameter's bytes, so NaN payloads compare exactly. */
function snapshot(model: GPT): Map<string, Uint8Array> {
  return new Map([...model.params].map(([name, v]) => [name, new Uint8Array((v.dataSync() as Float32Array).slice().buffer)]));
}

async function run(config: TrainConfig, prepare: (model: GPT) => void = () => {}, dataParallel?: DataParallelRole) {
  const model = new GPT(config.model, fullModelSlice(config.model), config.seed);
  prepare(model);
  const logs: string[] = [];
  const trainer = new Trainer({ config, model, dataset: patternDataset(32), log: (line) => logs.push(line), dataParallel });
  try {
    const result = await trainer.fit().then(
      (fit) => ({ fit, error: undefined }),
      (error: unknown) => ({ fit: undefined, error }),
    );
    return { ...result, logs, weights: snapshot(model), adamSteps: trainer.optimizer.stepCount, adamState: trainer.optimizer.state() };
  } finally {
    trainer.dispose();
    model.dispose();
  }
}

test('non-finite - describes what is not finite, and nothing when all is', () => {
  assert.equal(describeNonFinite({ loss: 2.5, gradNorm: 0.1 }), undefined);
  assert.equal(describeNonFinite({ loss: Number.NaN, gradNorm: 3 }), 'the loss is NaN');
  assert.equal(describeNonFinite({ loss: 1, gradNorm: Infinity }), 'the gradient norm is Infinity');
  assert.equal(describeNonFinite({ loss: -Infinity, gradNorm: Number.NaN }), 'the loss is -Infinity and the gradient norm is NaN');
  const guard = new NonFiniteGuard('skip');
  assert.equal(guard.check(1, { loss: 1, gradNorm: 1 }), undefined);
  assert.equal(guard.check(2, { loss: Number.NaN }), 'the loss is NaN');
  assert.equal(guard.summary(), 'skipped 1 of 2 steps whose loss or gradient norm was not finite (nonFinite = "skip")');
  assert.throws(() => new NonFiniteGuard('error').check(7, { gradNorm: Infinity }), (error: unknown) => {
    assert.ok(error instanceof NonFiniteStepError);
    assert.equal(error.restartable, false);
    assert.match(error.message, /^step 7: the gradient norm is Infinity; the update was not applied, so the weights \(and any checkpoint\) stay at step 6\. .*nonFinite to "skip"/);
    return true;
  });
});

test('non-finite - "error" (the default) stops at the diverging step with the weights and moments of the step before', async () => {
  const config = tinyTrainConfig({ ...DIVERGING, steps: 4 });
  assert.equal(config.nonFinite, 'error');
  const failed = await run(config);
  assert.ok(failed.error instanceof NonFiniteStepError, String(failed.error));
  assert.match(failed.error.message, /^step 2: the loss is NaN and the gradient norm is NaN; the update was not applied/);
  // The state a one-step run ends in, bit for bit: step 2 touched nothing.
  const oneStep = await run(tinyTrainConfig({ ...DIVERGING, steps: 1 }));
  assert.equal(oneStep.fit?.losses.length, 1);
  assert.ok(Number.isFinite(oneStep.fit!.losses[0]));
  assert.deepEqual(failed.weights, oneStep.weights);
  assert.equal(failed.adamSteps, 1);
});

test('non-finite - a poisoned parameter fails step 1 before Adam creates any state or moves any weight', async () => {
  let before: Map<string, Uint8Array> | undefined;
  const failed = await run(tinyTrainConfig({ steps: 3 }), (model) => {
    const [name, variable] = [...model.params][3];
    const values = variable.dataSync() as Float32Array;
    values[0] = Number.NaN;
    variable.assign(tf.tensor(values, variable.shape, 'float32'));
    before = snapshot(model);
    assert.ok(name.length > 0);
  });
  assert.ok(failed.error instanceof NonFiniteStepError);
  assert.match(failed.error.message, /^step 1: the loss is NaN/);
  assert.deepEqual(failed.weights, before);
  assert.equal(failed.adamSteps, 0);
  assert.equal(failed.adamState.moments.size, 0);
});

test('non-finite - "skip" drops every diverging update, counts and logs them, and finishes', async () => {
  const skipped = await run(tinyTrainConfig({ ...DIVERGING, steps: 4, nonFinite: 'skip' }));
  assert.equal(skipped.error, undefined);
  assert.equal(skipped.fit!.stepsDone, 4);
  assert.equal(skipped.fit!.skipped, 3);
  assert.ok(Number.isFinite(skipped.fit!.losses[0]));
  assert.ok(skipped.fit!.losses.slice(1).every(Number.isNaN), `losses ${skipped.fit!.losses}`);
  assert.ok(skipped.logs.includes('step 2: the loss is NaN and the gradient norm is NaN: update skipped (nonFinite = "skip"; 1 skipped so far)'), skipped.logs.join('\n'));
  assert.ok(skipped.logs.includes('skipped 3 of 4 steps whose loss or gradient norm was not finite (nonFinite = "skip")'), skipped.logs.join('\n'));
  const oneStep = await run(tinyTrainConfig({ ...DIVERGING, steps: 1 }));
  assert.deepEqual(skipped.weights, oneStep.weights);
  assert.equal(skipped.adamSteps, 1);
});

test('non-finite - a finite run is untouched by either policy', async () => {
  const strict = await run(tinyTrainConfig({ steps: 3 }));
  const lenient = await run(tinyTrainConfig({ steps: 3, nonFinite: 'skip' }));
  assert.deepEqual(strict.fit!.losses, lenient.fit!.losses);
  assert.deepEqual(strict.weights, lenient.weights);
  assert.equal(lenient.fit!.skipped, 0);
  assert.ok(!lenient.logs.some((line) => /skipped/.test(line)));
});

test('non-finite - data-parallel ranks skip the same steps, one of them logs, and their weights stay identical', async () => {
  const config = tinyTrainConfig({ ...DIVERGING, steps: 3, batchSize: 2, parallel: { data: 2 }, nonFinite: 'skip' });
  const allReduce = inProcessAllReduce(2);
  const [rank0, rank1] = await Promise.all([0, 1].map((rank) => run(config, () => {}, { rank, size: 2, allReduce: allReduce(rank) })));
  assert.equal(rank0.fit!.skipped, 2);
  assert.equal(rank1.fit!.skipped, 2);
  assert.deepEqual(rank0.weights, rank1.weights);
  assert.ok(rank0.logs.some((line) => line.startsWith('step 2: the loss is NaN')));
  assert.ok(!rank1.logs.some((line) => /skipped/.test(line)), rank1.logs.join('\n'));
});

import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { initBackend } from '../../src/backend/select.ts';
import type { TrainConfig } from '../../src/config/types.ts';
import { gatherBatch } from '../../src/dataset/sampler.ts';
import { ModelChunk } from '../../src/model/chunk.ts';
import { GPT, type TokenBatch } from '../../src/model/gpt.ts';
import { WORD_EMBEDDING, fullModelSlice, paramsForSlice, sliceForLayers } from '../../src/model/params.ts';
import { shardKind, shardRegion } from '../../src/model/sharding.ts';
import { buildSchedule } from '../../src/scheduler/schedules.ts';
import * as tf from '../../src/tf.ts';
import { Trainer } from '../../src/train/trainer.ts';
import { runPipeline } from '../stages/pipeline-helpers.ts';
import { dataset, makeGroups, makeTensorParallelRanks, tinyConfig } from './tp-helpers.ts';

before(async () => {
  await initBackend('cpu', () => {});
});

function batchOf(rows: number[], attentionMask?: Uint8Array): TokenBatch {
  const batch = gatherBatch(dataset, rows);
  return { ...batch, attentionMask: attentionMask ?? batch.attentionMask, sampleIds: Int32Array.from(rows) };
}

/** The oracle: the single-process loss and gradients (tf.variableGrads over the autodiff GPT.loss), by parameter name. */
function reference(batch: TokenBatch): { loss: number; grads: Map<string, tf.Tensor> } {
  const config = tinyConfig();
  const model = new GPT(config.model, fullModelSlice(config.model), config.seed);
  const variables = model.variables();
  const { value, grads } = tf.variableGrads(() => model.loss(batch), variables);
  const loss = value.dataSync()[0];
  value.dispose();
  const byName = new Map(model.specs.map((spec, i) => [spec.name, grads[variables[i].name]]));
  model.dispose();
  return { loss, grads: byName };
}

const close = (actual: number, expected: number, tolerance: number) => Math.abs(actual - expected) <= tolerance * (1 + Math.abs(expected));

/**
 * Every rank's gradient shards against the slice of the reference gradient each should equal; returns
 * one line per parameter with the max difference (llm.c's check), and the ones beyond tolerance.
 */
function compareGradients(reference: Map<string, tf.Tensor>, perRank: Map<string, tf.Tensor>[], tp: number): { report: string[]; failures: string[] } {
  const report: string[] = [];
  const failures: string[] = [];
  const config = tinyConfig();
  for (const spec of fullSpecs()) {
    let maxDiff = 0;
    let bad = false;
    perRank.forEach((grads, rank) => {
      const region = shardRegion(spec, tp, rank, config.model.numAttentionHeads);
      const slice = tf.slice(reference.get(spec.name)!, region.begin, region.size);
      const expected = slice.dataSync();
      slice.dispose();
      const actual = grads.get(spec.name)!.dataSync();
      assert.equal(actual.length, expected.length, `${spec.name} rank ${rank}: shard size`);
      for (let i = 0; i < actual.length; i++) {
        const diff = Math.abs(actual[i] - expected[i]);
        maxDiff = Math.max(maxDiff, diff);
        if (!close(actual[i], expected[i], 1e-4)) bad = true;
      }
    });
    const line = `${spec.name} (${shardKind(spec)}): max |diff| ${maxDiff.toExponential(2)}`;
    report.push(line);
    if (bad) failures.push(line);
  }
  return { report, failures };
}

/** The full model's parameter table. */
function fullSpecs() {
  const config = tinyConfig();
  return paramsForSlice(config.model, fullModelSlice(config.model));
}

/** One forward and backward of `chunk` (backwardInput, then backwardWeight): loss or hidden output, input gradient, gradients. */
async function forwardBackward(chunk: ModelChunk, batch: TokenBatch, input?: tf.Tensor3D, outputGrad?: (output: tf.Tensor) => tf.Tensor3D) {
  const { output, saved } = await chunk.forward(batch, input);
  const dy = outputGrad?.(output);
  const inputGrad = await chunk.backwardInput(saved, dy);
  dy?.dispose();
  const { grads } = chunk.backwardWeight(saved);
  return { output, inputGrad, grads };
}

async function checkParity(tp: number, batch: TokenBatch, checkpoint = false): Promise<number> {
  const expected = reference(batch);
  const ranks = makeTensorParallelRanks(tinyConfig(), tp, undefined, checkpoint);
  const before = tf.memory().numTensors;
  const results = await Promise.all(
    ranks.models.map(async (model) => {
      const { output, inputGrad, grads } = await forwardBackward(model, batch);
      assert.equal(inputGrad, undefined, 'a chunk holding the embedding has no input gradient');
      const loss = (await output.data())[0];
      output.dispose();
      return { loss, grads };
    }),
  );
  for (const { loss } of results) {
    assert.ok(Math.abs(loss - expected.loss) <= 1e-6 * Math.abs(expected.loss), `tp=${tp}: loss ${loss} vs single-process ${expected.loss}`);
  }
  const { report, failures } = compareGradients(expected.grads, results.map((r) => r.grads), tp);
  // TP_REPORT=1 prints the per-parameter differences even when they pass.
  if (process.env.TP_REPORT) console.log(`tp=${tp} loss diff ${Math.abs(results[0].loss - expected.loss)}\n` + report.join('\n'));
  assert.deepEqual(failures, [], `tp=${tp}: gradient shards differ from the single-process slices:\n${report.join('\n')}`);
  // Replicated gradients are computed from bit-identical inputs: bit-identical on every rank, no all-reduce needed.
  for (const spec of fullSpecs().filter((s) => shardKind(s) === 'replicated')) {
    const first = results[0].grads.get(spec.name)!.dataSync();
    for (const r of results.slice(1)) assert.deepEqual(r.grads.get(spec.name)!.dataSync(), first, `tp=${tp}: replicated ${spec.name} differs between ranks`);
  }
  for (const r of results) for (const g of r.grads.values()) g.dispose();
  assert.equal(tf.memory().numTensors, before, `tp=${tp}: a forward + backward leaked tensors`);
  for (const g of expected.grads.values()) g.dispose();
  await ranks.close();
  return results[0].loss;
}

test('model chunk - tp 1, 2 and 4: loss and every gradient shard equal the autodiff single-process model', async () => {
  const batch = batchOf([0, 5, 9, 30]);
  for (const tp of [1, 2, 4]) await checkParity(tp, batch);
});

test('model chunk - activation checkpointing (recompute in backwardInput) gives the same loss and gradients, tp 1 and 2', async () => {
  const batch = batchOf([1, 6, 17, 22]);
  for (const tp of [1, 2]) await checkParity(tp, batch, true);
  // And it does keep less: nothing but the input (none here: the chunk holds the embedding) until the backward.
  const ranks = makeTensorParallelRanks(tinyConfig(), 1, undefined, true);
  const { output, saved } = await ranks.models[0].forward(batch);
  assert.equal(saved.activations, undefined);
  assert.equal(saved.input, undefined);
  output.dispose();
  ranks.models[0].release(saved);
  await ranks.close();
});

test('model chunk - the padding mask is honoured', async () => {
  const mask = new Uint8Array(4 * 8).fill(1);
  // Rows 1 and 3 end in padding: those keys must be invisible to every query.
  for (const [row, from] of [[1, 5], [3, 3]]) mask.fill(0, row * 8 + from, (row + 1) * 8);
  const padded = await checkParity(2, batchOf([2, 7, 11, 13], mask));
  const unpadded = await checkParity(2, batchOf([2, 7, 11, 13]));
  assert.ok(Math.abs(padded - unpadded) > 1e-4, `the mask changed nothing: ${padded} vs ${unpadded}`);
});

test('model chunk - backwardWeight run later, after other micro-batches\' forwards, gives the gradients of running it at once', async () => {
  const config = tinyConfig();
  const chunk = new ModelChunk({ config: config.model, slice: fullModelSlice(config.model), seed: config.seed });
  const [a, b] = [batchOf([0, 1]), batchOf([2, 3])];
  const atOnce = await forwardBackward(chunk, a);
  const before = tf.memory().numTensors;
  const first = await chunk.forward(a);
  await chunk.backwardInput(first.saved);
  // Another micro-batch's forward and input backward in between, as a zero-bubble schedule interleaves them.
  const second = await chunk.forward(b);
  await chunk.backwardInput(second.saved);
  const late = chunk.backwardWeight(first.saved);
  chunk.release(second.saved);
  assert.throws(() => chunk.backwardWeight(first.saved), /backwardWeight before backwardInput \(or twice/);
  for (const [name, grad] of atOnce.grads) assert.deepEqual(late.grads.get(name)!.dataSync(), grad.dataSync(), name);
  tf.dispose([first.output, second.output, ...late.grads.values()]);
  assert.equal(tf.memory().numTensors, before, 'the split backward leaked tensors');
  tf.dispose([atOnce.output, ...atOnce.grads.values()]);
  chunk.dispose();
});

/** The gradient of the hidden states after layer `layer` in the autodiff oracle: what a pipeline boundary there must carry. */
function referenceBoundaryGrad(batch: TokenBatch, layer: number): Float32Array {
  const config = tinyConfig();
  const first = new GPT(config.model, sliceForLayers(config.model, 0, layer), config.seed);
  const rest = new GPT(config.model, sliceForLayers(config.model, layer, config.model.numLayers), config.seed);
  const hidden = tf.tidy(() => first.forward(batch, undefined, {}) as tf.Tensor3D);
  const grad = tf.tidy(() => tf.grad((h: tf.Tensor) => rest.forward(batch, h as tf.Tensor3D, {}) as tf.Scalar)(hidden));
  const values = grad.dataSync() as Float32Array;
  tf.dispose([hidden, grad]);
  first.dispose();
  rest.dispose();
  return values;
}

test('model chunk - two pipeline-shaped chunks (embedding only, head only) at tp 1, 2, 4 equal the whole model: loss, input gradient, every shard', async () => {
  const config = tinyConfig();
  const batch = batchOf([3, 4, 20, 31]);
  const expected = reference(batch);
  const boundary = referenceBoundaryGrad(batch, 1);
  for (const tp of [1, 2, 4]) {
    const first = makeTensorParallelRanks(config, tp, sliceForLayers(config.model, 0, 1));
    const last = makeTensorParallelRanks(config, tp, sliceForLayers(config.model, 1, 2));
    const before = tf.memory().numTensors;
    const grads = await Promise.all(
      Array.from({ length: tp }, async (_, rank) => {
        const forward0 = await first.models[rank].forward(batch);
        const hidden = forward0.output as tf.Tensor3D;
        const back1 = await forwardBackward(last.models[rank], batch, hidden);
        const loss = (await back1.output.data())[0];
        assert.ok(Math.abs(loss - expected.loss) <= 1e-6 * expected.loss, `tp=${tp} rank ${rank}: loss ${loss} vs ${expected.loss}`);
        assert.equal(await first.models[rank].backwardInput(forward0.saved, back1.inputGrad), undefined);
        const back0 = first.models[rank].backwardWeight(forward0.saved);
        const inputGrad = back1.inputGrad!.dataSync() as Float32Array;
        tf.dispose([hidden, back1.output, back1.inputGrad!]);
        return { merged: new Map([...back0.grads, ...back1.grads]), tied: [back0.grads.get(WORD_EMBEDDING)!, back1.grads.get(WORD_EMBEDDING)!], inputGrad };
      }),
    );
    // The stage boundary's gradient is replicated: the same bits on every tp rank, as the pipeline sends it.
    for (const g of grads.slice(1)) assert.deepEqual(g.inputGrad, grads[0].inputGrad);
    const maxDiff = boundary.reduce((m, v, i) => Math.max(m, Math.abs(v - grads[0].inputGrad[i])), 0);
    assert.ok(maxDiff <= 1e-6, `tp=${tp}: the boundary gradient differs from autodiff's by ${maxDiff}`);
    // The tied embedding's two copies (first and last chunk) each get part of the gradient; their sum is the whole.
    const perRank = grads.map(({ merged, tied }) => {
      const sum = tf.add(tied[0], tied[1]);
      merged.set(WORD_EMBEDDING, sum);
      tied.forEach((t) => t.dispose());
      return merged;
    });
    const { report, failures } = compareGradients(expected.grads, perRank, tp);
    assert.deepEqual(failures, [], `two chunks at tp=${tp}: gradient shards differ:\n${report.join('\n')}`);
    for (const merged of perRank) for (const g of merged.values()) g.dispose();
    assert.equal(tf.memory().numTensors, before, `two chunks at tp=${tp} leaked tensors`);
    await first.close();
    await last.close();
  }
  for (const g of expected.grads.values()) g.dispose();
});

async function trainerLosses(config: TrainConfig): Promise<number[]> {
  const model = new GPT(config.model, fullModelSlice(config.model), config.seed);
  const trainer = new Trainer({ config, model, dataset, log: () => {} });
  const { losses } = await trainer.fit();
  trainer.dispose();
  model.dispose();
  return losses;
}

async function checkTraining(overrides: Record<string, unknown>, sizes: number[]): Promise<void> {
  const expected = await trainerLosses(tinyConfig({ numMicroBatches: 2, steps: 3, ...overrides }));
  for (const tp of sizes) {
    const config = tinyConfig({ numMicroBatches: 2, steps: 3, parallel: { tensor: { size: tp } }, ...overrides });
    const ops = buildSchedule('1f1b', 1, config.numMicroBatches, 1).ops;
    const { losses } = await runPipeline(config, dataset, 3, () => ops[0].map((op) => ({ ...op })));
    losses.forEach((loss, i) => assert.ok(Math.abs(loss - expected[i]) <= 1e-5 * Math.abs(expected[i]), `tp=${tp} step ${i + 1}: ${loss} vs single-process ${expected[i]}`));
  }
}

test('model chunk - 3 Adam steps at tp 2 and 4 give the single-process Trainer\'s losses', async () => {
  await checkTraining({}, [2, 4]);
});

test('model chunk - clipping by the global gradient norm: the norm spans every rank\'s shards', async () => {
  // A clip well below this model's gradient norm (~1): a norm over one rank's shards alone would clip differently.
  await checkTraining({ optimizer: { lr: 1e-2, gradClip: 0.2 } }, [2]);
});

test('model chunk - a forward whose peer never arrives fails with the collective\'s error and frees its tensors', async () => {
  const config = tinyConfig();
  const { groups, close } = makeGroups(2, 300);
  const lonely = new ModelChunk({ config: config.model, slice: fullModelSlice(config.model), seed: config.seed, group: groups[0] });
  const before = tf.memory().numTensors;
  await assert.rejects(lonely.forward(batchOf([0, 1])), /tensor-parallel all-reduce at embedding lookup \(tp rank 0 of 2\)/);
  assert.equal(tf.memory().numTensors, before);
  lonely.dispose();
  await close();
});

test('model chunk - a backward whose peer never arrives fails and, once released, leaves no tensor behind', async () => {
  const config = tinyConfig();
  const { groups, close } = makeGroups(2, 300);
  const chunks = groups.map((group) => new ModelChunk({ config: config.model, slice: fullModelSlice(config.model), seed: config.seed, group }));
  const before = tf.memory().numTensors;
  const forwards = await Promise.all(chunks.map((chunk) => chunk.forward(batchOf([0, 1]))));
  for (const { output } of forwards) output.dispose();
  // Rank 1 is gone after the forward: rank 0's backward waits for it at its first all-reduce.
  chunks[1].release(forwards[1].saved);
  await assert.rejects(chunks[0].backwardInput(forwards[0].saved), /tensor-parallel all-reduce at .* \(tp rank 0 of 2\)/);
  chunks[0].release(forwards[0].saved);
  assert.equal(tf.memory().numTensors, before);
  for (const chunk of chunks) chunk.dispose();
  await close();
});

test('model chunk - a forward is taken back once: a second backward, or one after release(), fails (also with checkpointing)', async () => {
  for (const checkpoint of [false, true]) {
    const ranks = makeTensorParallelRanks(tinyConfig(), 1, undefined, checkpoint);
    const chunk = ranks.models[0];
    const before = tf.memory().numTensors;
    const first = await chunk.forward(batchOf([0, 1]));
    first.output.dispose();
    await chunk.backwardInput(first.saved);
    await assert.rejects(chunk.backwardInput(first.saved), /backwardInput called twice/);
    tf.dispose([...chunk.backwardWeight(first.saved).grads.values()]);
    await assert.rejects(chunk.backwardInput(first.saved), /after release\(\) or backwardWeight/);
    const second = await chunk.forward(batchOf([0, 1]));
    second.output.dispose();
    chunk.release(second.saved);
    await assert.rejects(chunk.backwardInput(second.saved), /after release\(\) or backwardWeight/, `checkpoint ${checkpoint}`);
    assert.throws(() => chunk.backwardWeight(second.saved), /before backwardInput/);
    assert.equal(tf.memory().numTensors, before);
    await ranks.close();
  }
});

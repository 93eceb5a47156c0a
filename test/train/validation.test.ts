/**
 * Validation during training (dataset/validation-split.ts, train/evaluation-plan.ts): the held-out
 * share is disjoint from everything the training sampler ever draws, the evaluated samples split over
 * data-parallel ranks without loss or repeat, bad settings are refused naming the key, and the
 * validation losses of a single-process and a pipeline 2 x tensor 2 run are equal at steps 10 and 20.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { resolveConfig } from '../../src/config/resolve.ts';
import type { TrainConfigInput } from '../../src/config/types.ts';
import { gatherBatch } from '../../src/dataset/sampler.ts';
import { isHeldOut, splitValidation } from '../../src/dataset/validation-split.ts';
import type { TokenizedDataset } from '../../src/dataset/webtext.ts';
import { evaluationBatches, evaluationMicroBatches } from '../../src/train/evaluation-plan.ts';
import { globalBatchSampler } from '../../src/train/global-batch.ts';
import { runCli, writeTestConfig } from '../support/cli.ts';

/** Sample i's every token is 1000 + i: a training row tells which sample of the file it was. */
function numberedDataset(numSamples: number, seqLen = 4): TokenizedDataset {
  const inputIds = new Int32Array(numSamples * seqLen);
  for (let i = 0; i < numSamples; i++) inputIds.fill(1000 + i, i * seqLen, (i + 1) * seqLen);
  return { inputIds, attentionMask: new Uint8Array(numSamples * seqLen).fill(1), numSamples, seqLen };
}

const config = (input: TrainConfigInput) => resolveConfig({ model: { preset: 'tiny' }, ...input, data: { path: 'x.jsonl', ...input.data } }, { checkDataFile: false });

test('split - the held-out share is spread evenly through the file, and no batch the training sampler draws, in any epoch, holds one of it', () => {
  const file = numberedDataset(103);
  const split = splitValidation(file, 0.1);
  assert.deepEqual([...split.heldOutIndices], [9, 19, 29, 39, 49, 59, 69, 79, 89, 99]);
  assert.equal(split.train.numSamples + split.validation.numSamples, 103);
  // The rows are the file's own, in file order.
  assert.deepEqual([...split.validation.inputIds.filter((_, i) => i % 4 === 0)], [...split.heldOutIndices].map((i) => 1000 + i));

  const held = new Set(split.heldOutIndices);
  const training = config({ batchSize: 8, data: { path: 'x.jsonl', validFraction: 0.1, dropLast: false }, seed: 7 });
  const sampler = globalBatchSampler(training, split.train.numSamples);
  const seen = new Set<number>();
  for (let step = 0; step < 3 * sampler.stepsPerEpoch; step++) {
    const rows = gatherBatch(split.train, sampler.globalBatch(step));
    for (let row = 0; row < rows.batch; row++) {
      const fileIndex = rows.inputIds[row * rows.seqLen]! - 1000;
      assert.ok(!held.has(fileIndex), `step ${step + 1} trains on held-out sample ${fileIndex}`);
      seen.add(fileIndex);
    }
  }
  assert.equal(seen.size, 93, 'every sample not held out is trained on');
  // Any fraction: held out and trained on partition the file.
  for (const fraction of [0.05, 0.25, 1 / 3, 0.5, 0.9]) {
    const { trainIndices, heldOutIndices } = splitValidation(file, fraction);
    assert.deepEqual([...trainIndices, ...heldOutIndices].sort((a, b) => a - b), Array.from({ length: 103 }, (_, i) => i));
    assert.ok([...heldOutIndices].every((i) => isHeldOut(i, fraction)) && [...trainIndices].every((i) => !isHeldOut(i, fraction)));
    assert.equal(heldOutIndices.length, Math.floor(103 * fraction + 1e-9), `fraction ${fraction}`);
  }
  assert.throws(() => splitValidation(numberedDataset(5), 0.1), /holds out none: raise it to at least 0\.2/);
});

test('plan - one evaluation reads whole global batches of the validation data in file order, every sample once over the data-parallel ranks', () => {
  const layout = config({ batchSize: 4, numMicroBatches: 2, gradientAccumulation: 2, parallel: { data: 2 }, data: { path: 'x.jsonl', validFraction: 0.1 } });
  // G = 4 x 2 x 2 = 16: 40 samples hold 2 whole global batches.
  assert.equal(evaluationBatches(layout, 40), 2);
  const replicas = [0, 1].map((dpRank) => evaluationMicroBatches(layout, 40, dpRank));
  for (const microBatches of replicas) {
    assert.equal(microBatches.length, 2 * 2 * 2);
    assert.ok(microBatches.every((ids) => ids.length === 2));
  }
  const all = replicas.flatMap((microBatches) => microBatches.flatMap((ids) => [...ids])).sort((a, b) => a - b);
  assert.deepEqual(all, Array.from({ length: 32 }, (_, i) => i));
  assert.equal(evaluationBatches({ ...layout, eval: { every: 0, batches: 1 } }, 40), 1);
  assert.throws(() => evaluationBatches(layout, 15), /validation data has 15 samples, fewer than one global batch of 16/);
});

test('config - validation settings that cannot work are refused naming the key', () => {
  assert.throws(() => config({ data: { path: 'x.jsonl', validFraction: 0.1, validPath: 'v.jsonl' } }), /data\.validFraction = 0\.1 and data\.validPath both name validation data/);
  assert.throws(() => config({ eval: { every: 10 } }), /eval\.every is set but the run has no validation data: set data\.validPath/);
  assert.throws(() => config({ data: { path: 'x.jsonl', validFraction: 1 } }), /data\.validFraction/);
  const valid = config({ data: { path: 'x.jsonl', validFraction: 0.05 }, eval: { every: 10, batches: 2 } });
  assert.deepEqual(valid.eval, { every: 10, batches: 2 });
  assert.equal(config({}).data.validFraction, 0);
});

const EVAL = ['steps=20', 'data.validFraction=0.1', 'eval.every=10', 'eval.batches=2'];
const configFile = writeTestConfig({ batchSize: 4, seqLen: 16 });
const validationLines = (file: string) =>
  readFileSync(file, 'utf8').trim().split('\n').map((line) => JSON.parse(line) as { step: number; val_loss?: number; val_ppl?: number }).filter((m) => m.val_loss !== undefined);

async function train(out: string, sets: string[], extra: string[] = []): Promise<{ lines: ReturnType<typeof validationLines>; output: string }> {
  const { code, output } = await runCli(['train', configFile, '--out', out, ...sets.flatMap((s) => ['--set', s]), ...extra], { NATS_URL: 'nats://127.0.0.1:1' });
  assert.equal(code, 0, output);
  return { lines: validationLines(join(out, 'metrics.jsonl')), output };
}

test('run - val_loss at steps 10 and 20 of a single-process run and of a pipeline 2 x tensor 2 job (simulated ranks) agree within 1e-5', async () => {
  const root = mkdtempSync(join(tmpdir(), 'gpt-hybrid-validation-'));
  const single = await train(join(root, 'single'), EVAL);
  assert.deepEqual(single.lines.map((m) => m.step), [10, 20]);
  assert.match(single.output, /validation after step 10\/20 {2}val_loss \d+\.\d{4} {2}val_ppl \d+\.\d{2} {2}\(8 samples/);
  for (const m of single.lines) assert.equal(m.val_ppl, Math.exp(m.val_loss!));
  // The model learns, so the two evaluations differ: equal values would mean nothing was evaluated.
  assert.ok(single.lines[1]!.val_loss! < single.lines[0]!.val_loss!, JSON.stringify(single.lines));

  const parallel = await train(join(root, 'pp2-tp2'), [...EVAL, 'parallel.pipeline=2', 'parallel.tensor.size=2', 'numMicroBatches=2'], ['--simulate', '--quiet']);
  assert.deepEqual(parallel.lines.map((m) => m.step), [10, 20]);
  parallel.lines.forEach((m, i) => {
    const expected = single.lines[i]!.val_loss!;
    assert.ok(Math.abs(m.val_loss! - expected) <= 1e-5 * Math.abs(expected), `step ${m.step}: ${m.val_loss} vs ${expected}`);
  });
});

// Tests: the non-finite policy in the pipeline step, in process: every rank of pipeline x tensor
// parallelism reaches the same decision from the reduced loss and norm, in float32 and in fp16 mode.
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { initBackend } from '../../src/backend/select.ts';
import type { TrainConfig } from '../../src/config/types.ts';
import type { PipelineOp } from '../../src/scheduler/ops.ts';
import { buildSchedule } from '../../src/scheduler/schedules.ts';
import { NonFiniteStepError } from '../../src/train/non-finite.ts';
import { patternDataset, tinyTrainConfig } from '../train/trainer-helpers.ts';
import { runPipeline } from './pipeline-helpers.ts';

before(async () => {
  await initBackend('cpu', () => {});
});

const dataset = patternDataset(32);
const ops = (rank: number): PipelineOp[] => buildSchedule('1f1b', 2, 2, 1).ops[rank].map((op) => ({ ...op }));

/** pipeline 2 x tensor 2, with Adam's first step of about 1e30 per weight: step 2 overflows. */
function diverging(overrides: Record<string, unknown> = {}): TrainConfig {
  const config = tinyTrainConfig({ parallel: { pipeline: 2, tensor: { size: 2 } }, numMicroBatches: 2, optimizer: { lr: 1e30 }, ...overrides });
  // The vocab-parallel head splits the vocabulary over the two shards.
  return { ...config, model: { ...config.model, vocabSize: 24 } };
}

test('pipeline non-finite - "skip": every rank skips the diverging steps and keeps the weights of step 1', async () => {
  const skipped = await runPipeline(diverging({ nonFinite: 'skip' }), dataset, 3, ops);
  assert.deepEqual(skipped.skipped, [[false, false, false, false], [true, true, true, true], [true, true, true, true]]);
  assert.ok(Number.isFinite(skipped.losses[0]) && skipped.losses.slice(1).every(Number.isNaN), `losses ${skipped.losses}`);
  const oneStep = await runPipeline(diverging(), dataset, 1, ops);
  assert.deepEqual(skipped.embeddings, oneStep.embeddings);
});

test('pipeline non-finite - "error": every rank stops at step 2 naming the loss and the norm', async () => {
  await assert.rejects(runPipeline(diverging(), dataset, 3, ops), (error: unknown) => {
    assert.ok(error instanceof NonFiniteStepError, String(error));
    assert.match(error.message, /^step 2: the loss is NaN and the gradient norm is NaN; the update was not applied/);
    return true;
  });
});

test('pipeline non-finite - fp16: a loss that is not finite meets the policy instead of shrinking the loss scale forever', async () => {
  const fp16 = { fp16: { mode: 'naive' } };
  await assert.rejects(runPipeline(diverging(fp16), dataset, 3, ops), /^NonFiniteStepError: step 2: the loss is NaN; the update was not applied/);
  const skipped = await runPipeline(diverging({ ...fp16, nonFinite: 'skip' }), dataset, 3, ops);
  assert.deepEqual(skipped.skipped.map((ranks) => new Set(ranks).size), [1, 1, 1], 'ranks disagree on skipping');
  assert.deepEqual(skipped.skipped.map((ranks) => ranks[0]), [false, true, true]);
});

/**
 * Evaluation: evaluateLoss weighs batches by their rows (a dataset in uneven batches gives the loss of
 * one batch of everything), perplexity is exp(loss); and `gpt-hybrid eval` prints the same loss for a
 * single-process and a pp2 checkpoint of one run, and refuses what it cannot do.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, test } from 'node:test';
import { initBackend } from '../../src/backend/select.ts';
import { GPT } from '../../src/model/gpt.ts';
import { fullModelSlice } from '../../src/model/params.ts';
import { evaluateLoss } from '../../src/train/evaluate.ts';
import { tinyConfig } from '../model/helpers.ts';
import { REPO, runCli, writeTestConfig } from '../support/cli.ts';

before(async () => {
  await initBackend('wasm', () => {});
});

test('evaluateLoss - uneven batches weighted by rows: the loss of one batch holding every sample; perplexity exp(loss)', async () => {
  const config = tinyConfig();
  const model = new GPT(config, fullModelSlice(config), 11);
  const seqLen = 6;
  const numSamples = 5;
  const inputIds = Int32Array.from({ length: numSamples * seqLen }, (_, i) => (i * 7 + 3) % config.vocabSize);
  const dataset = { inputIds, attentionMask: new Uint8Array(inputIds.length).fill(1), numSamples, seqLen };
  try {
    const whole = await evaluateLoss(model, dataset, { batchSize: numSamples });
    const pieces = await evaluateLoss(model, dataset, { batchSize: 2 });
    assert.equal(pieces.batches, 3);
    assert.equal(pieces.samples, 5);
    assert.ok(Math.abs(pieces.loss - whole.loss) < 1e-6 * whole.loss, `${pieces.loss} vs ${whole.loss}`);
    assert.equal(pieces.perplexity, Math.exp(pieces.loss));
    const first = await evaluateLoss(model, dataset, { batchSize: 2, maxBatches: 1 });
    assert.deepEqual([first.batches, first.samples], [1, 2]);
  } finally {
    model.dispose();
  }
});

test('eval - a single-process and a pp2 checkpoint of one run give the same loss on a file', async () => {
  const root = mkdtempSync(join(tmpdir(), 'gpt-hybrid-eval-'));
  const config = writeTestConfig({ steps: 4, checkpoint: { every: 4 } });
  const data = join(REPO, 'data', 'brown-sample.jsonl');
  const offline = { NATS_URL: 'nats://127.0.0.1:1' };
  const losses: number[] = [];
  for (const [name, flags] of [['single', []], ['pp2', ['--simulate', '--set', 'parallel.pipeline=2', '--set', 'numMicroBatches=2']]] as const) {
    const trained = await runCli(['train', config, '--out', join(root, name), '--quiet', ...flags], offline);
    assert.equal(trained.code, 0, trained.output);
    const evaluated = await runCli(['eval', join(root, name), '--data', data, '--max-batches', '3'], offline);
    assert.equal(evaluated.code, 0, evaluated.output);
    const match = evaluated.output.match(/\(after step 4\) on .*: loss ([\d.]+), perplexity ([\d.]+) \(12 samples of 32 tokens, 3 batches\)/);
    assert.ok(match !== null, evaluated.output);
    assert.ok(Math.abs(Math.exp(Number(match[1])) - Number(match[2])) < 0.01 * Number(match[2]));
    losses.push(Number(match[1]));
  }
  assert.equal(losses[1], losses[0]);
  const tooLong = await runCli(['eval', join(root, 'single'), '--data', data, '--seq-len', '4096'], offline);
  assert.equal(tooLong.code, 1);
  assert.match(tooLong.output, /--seq-len 4096 is longer than the model's 256 positions/);
});

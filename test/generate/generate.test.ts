/**
 * Generation: the key/value-cached decoder against the tape model's full forward at every position,
 * the token choice (greedy, top-k, top-p, temperature, the tokenizer's ids only), and `gpt-hybrid
 * generate` end to end: greedy text identical from a single-process, a pp2 and a tp2 checkpoint of the
 * same run; a seed repeats its text and another seed gives another.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, test } from 'node:test';
import { initBackend } from '../../src/backend/select.ts';
import { CachedDecoder } from '../../src/generate/cached-decoder.ts';
import { pickToken } from '../../src/generate/sampling.ts';
import { GPT } from '../../src/model/gpt.ts';
import { attentionBias, layerNorm } from '../../src/model/layers.ts';
import { WORD_EMBEDDING, fullModelSlice } from '../../src/model/params.ts';
import * as tf from '../../src/tf.ts';
import { tinyConfig } from '../model/helpers.ts';
import { runCli, writeTestConfig } from '../support/cli.ts';

before(async () => {
  await initBackend('wasm', () => {});
});

/** Logits [T, V] at every position from GPT's own forward (the tape model's ops, eval mode). */
function fullForwardLogits(model: GPT, ids: number[]): Float32Array[] {
  return tf.tidy(() => {
    const t = ids.length;
    let x = model.embed(tf.tensor2d(ids, [1, t], 'int32'), {});
    const bias = attentionBias(new Uint8Array(t).fill(1), 1, t);
    for (let layer = 0; layer < model.config.numLayers; layer++) x = model.block(layer, x, bias, {});
    const normed = layerNorm(tf.reshape(x, [t, model.config.hiddenSize]), model.param('norm.gamma'), model.param('norm.beta'), model.config.layerNormEpsilon);
    const logits = tf.matMul(normed, model.param(WORD_EMBEDDING), false, true).dataSync() as Float32Array;
    return Array.from({ length: t }, (_, row) => logits.slice(row * model.config.vocabSize, (row + 1) * model.config.vocabSize));
  });
}

test('cached decoder - the prompt at once, then one token at a time: the full forward\'s logits at every position', async () => {
  const config = tinyConfig({ numLayers: 3, vocabSize: 41 });
  const model = new GPT(config, fullModelSlice(config), 7);
  const ids = [3, 17, 5, 40, 0, 22, 9, 31, 12, 8];
  const reference = fullForwardLogits(model, ids);
  const decoder = new CachedDecoder(model);
  const before = tf.memory().numTensors;
  try {
    const atPrompt = await decoder.feed(ids.slice(0, 4));
    const steps = [atPrompt];
    for (const id of ids.slice(4)) steps.push(await decoder.feed([id]));
    steps.forEach((logits, i) => {
      const position = i + 3;
      const worst = Math.max(...logits.map((v, j) => Math.abs(v - reference[position]![j]!)));
      assert.ok(worst < 1e-5, `position ${position}: max |cached - full| ${worst}`);
    });
    assert.equal(decoder.length, ids.length);
    assert.equal(tf.memory().numTensors, before + 2 * config.numLayers, 'only the keys and values of every layer stay');
    await assert.rejects(decoder.feed(new Array(7).fill(1)), /sees at most 16 positions/);
  } finally {
    decoder.dispose();
    model.dispose();
  }
});

test('pickToken - greedy, top-k 1, a tiny top-p and the temperature; padding ids are never chosen', () => {
  const logits = Float32Array.of(0.5, 2, Math.log(3) + 2, 9);
  const allowed = 3; // id 3 is padding past the tokenizer's vocabulary
  assert.equal(pickToken(logits, allowed, { temperature: 0 }, 0.99), 2);
  for (const u of [0, 0.5, 0.999]) {
    assert.equal(pickToken(logits, allowed, { temperature: 1, topK: 1 }, u), 2);
    assert.equal(pickToken(logits, allowed, { temperature: 1, topP: 1e-6 }, u), 2);
  }
  // Ids 1 and 2 alone (top-k 2) have probabilities 1/4 and 3/4; sorted, id 2 comes first.
  assert.equal(pickToken(logits, allowed, { temperature: 1, topK: 2 }, 0.7), 2);
  assert.equal(pickToken(logits, allowed, { temperature: 1, topK: 2 }, 0.8), 1);
  // Temperature 0.5 squares the odds: 9 to 1.
  assert.equal(pickToken(logits, allowed, { temperature: 0.5, topK: 2 }, 0.89), 2);
  assert.equal(pickToken(logits, allowed, { temperature: 0.5, topK: 2 }, 0.91), 1);
  // Stratified draws over all three allowed ids follow the softmax.
  const counts = new Map<number, number>();
  for (let i = 0; i < 1000; i++) {
    const id = pickToken(logits, allowed, { temperature: 1 }, (i + 0.5) / 1000);
    counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  assert.equal(counts.get(3), undefined);
  const p0 = Math.exp(0.5) / (Math.exp(0.5) + Math.exp(2) + 3 * Math.exp(2));
  assert.ok(Math.abs((counts.get(0) ?? 0) / 1000 - p0) < 0.002, `id 0 drawn ${counts.get(0)} of 1000, expected ${p0}`);
});

test('generate - greedy text equal from single-process, pp2 and tp2 checkpoints of one run; a seed repeats its text', async () => {
  const config = writeTestConfig({ steps: 6, checkpoint: { every: 6 } });
  const root = mkdtempSync(join(tmpdir(), 'gpt-hybrid-generate-'));
  const offline = { NATS_URL: 'nats://127.0.0.1:1' };
  const layouts: Record<string, string[]> = {
    single: [],
    pp2: ['--simulate', '--set', 'parallel.pipeline=2', '--set', 'numMicroBatches=2'],
    tp2: ['--simulate', '--set', 'parallel.tensor.size=2'],
  };
  const texts: string[] = [];
  for (const [name, flags] of Object.entries(layouts)) {
    const trained = await runCli(['train', config, '--out', join(root, name), '--quiet', ...flags], offline);
    assert.equal(trained.code, 0, trained.output);
    const generated = await runCli(['generate', join(root, name), '--prompt', 'The jury said', '--temperature', '0', '-n', '12'], offline);
    assert.equal(generated.code, 0, generated.output);
    assert.match(generated.output, /prompt 3 tokens; stopped at 12 new tokens/);
    texts.push(generated.output.split('\n').find((line) => line.startsWith('The jury said'))!);
  }
  assert.ok(texts[0]!.length > 'The jury said'.length, texts[0]);
  assert.deepEqual(texts, [texts[0], texts[0], texts[0]]);

  const sample = async (seed: number) => {
    const run = await runCli(['generate', join(root, 'single'), '--prompt', 'It was', '--top-k', '50', '--seed', String(seed), '-n', '10'], offline);
    assert.equal(run.code, 0, run.output);
    return run.output.split('\n').find((line) => line.startsWith('It was'))!;
  };
  const first = await sample(1);
  assert.equal(await sample(1), first);
  assert.notEqual(await sample(2), first);
  const bad = await runCli(['generate', join(root, 'single'), '--prompt', 'x', '--top-p', '1.5'], offline);
  assert.equal(bad.code, 2);
  assert.match(bad.output, /--top-p must be in \(0, 1\], got 1\.5/);
});

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, test } from 'node:test';
import { initBackend } from '../../src/backend/select.ts';
import type { TrainConfig } from '../../src/config/types.ts';
import { GPT } from '../../src/model/gpt.ts';
import { fullModelSlice } from '../../src/model/params.ts';
import * as tf from '../../src/tf.ts';
import type { Hook } from '../../src/train/hooks/hook.ts';
import { LogMetricByStepHook } from '../../src/train/hooks/log-by-step.ts';
import { LossHook } from '../../src/train/hooks/loss.ts';
import { ThroughputHook } from '../../src/train/hooks/throughput.ts';
import { restoreCheckpoint } from '../../src/train/checkpointing.ts';
import { AdamOptimizer } from '../../src/train/optimizer.ts';
import { Trainer } from '../../src/train/trainer.ts';
import { SEQ_LEN, inProcessAllReduce, patternDataset, tinyTrainConfig } from './trainer-helpers.ts';

before(async () => {
  await initBackend('cpu', () => {});
});

async function train(config: TrainConfig, hooks: Hook[] = [new LossHook()]) {
  const model = new GPT(config.model, fullModelSlice(config.model), config.seed);
  const trainer = new Trainer({ config, model, dataset: patternDataset(32, 23), hooks, log: () => {} });
  const result = await trainer.fit();
  const weights = Array.from(model.variables()[2].dataSync());
  trainer.dispose();
  model.dispose();
  return { ...result, weights };
}

test('trainer - the same run twice gives identical losses and weights', async () => {
  const first = await train(tinyTrainConfig());
  const second = await train(tinyTrainConfig());
  assert.equal(first.stepsDone, 6);
  assert.deepEqual(first.losses, second.losses);
  assert.deepEqual(first.weights, second.weights);
  assert.ok(first.losses.at(-1)! < first.losses[0] - 0.15, `losses ${first.losses}`);
});

test('trainer - micro-batches and gradient accumulation reproduce the big-batch step', async () => {
  const whole = await train(tinyTrainConfig());
  const micro = await train(tinyTrainConfig({ numMicroBatches: 2 }));
  const accumulated = await train(tinyTrainConfig({ batchSize: 2, gradientAccumulation: 2 }));
  for (const other of [micro, accumulated]) {
    other.losses.forEach((loss, i) => assert.ok(Math.abs(loss - whole.losses[i]) < 1e-5, `step ${i}: ${loss} vs ${whole.losses[i]}`));
  }
});

test('trainer - dropout is deterministic and changes the run', async () => {
  const withDropout = tinyTrainConfig();
  withDropout.model = { ...withDropout.model, dropRate: 0.1, attnDropRate: 0.1, embedDropRate: 0.1 };
  const a = await train(withDropout);
  const b = await train(withDropout);
  const plain = await train(tinyTrainConfig());
  assert.deepEqual(a.losses, b.losses);
  assert.notDeepEqual(a.losses, plain.losses);
});

test('trainer - tensor count is stable across steps', async () => {
  const config = tinyTrainConfig({ steps: 5 });
  const model = new GPT(config.model, fullModelSlice(config.model), config.seed);
  const counts: number[] = [];
  const trainer = new Trainer({
    config,
    model,
    dataset: patternDataset(32, 23),
    log: () => {},
    hooks: [{ name: 'count', afterStep: () => void counts.push(tf.memory().numTensors) }],
  });
  await trainer.fit();
  // The first step creates the optimizer moments; every later step must end where it started.
  assert.equal(new Set(counts.slice(1)).size, 1, `tensor counts per step: ${counts}`);
  trainer.dispose();
  model.dispose();
});

test('trainer - metrics.jsonl gets one record per step with the documented fields', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'gpt-hybrid-metrics-'));
  const metricsPath = join(dir, 'metrics.jsonl');
  const lines: string[] = [];
  const sink = { write: (text: string) => lines.push(text), isTTY: false } as unknown as NodeJS.WriteStream;
  const startedAt = Date.now();
  const result = await train(tinyTrainConfig({ steps: 3 }), [
    new LossHook(),
    new ThroughputHook(),
    new LogMetricByStepHook({ metricsPath, stream: sink }),
  ]);
  const records = readFileSync(metricsPath, 'utf8').trim().split('\n').map((line) => JSON.parse(line));
  assert.deepEqual(records.map((r) => r.step), [1, 2, 3]);
  assert.deepEqual(records.map((r) => r.loss), result.losses);
  assert.deepEqual(records.map((r) => r.consumed_samples), [4, 8, 12]);
  for (const record of records) {
    assert.equal(record.tokens, 4 * SEQ_LEN);
    assert.ok(record.elapsed_ms > 0 && record.tokens_per_s > 0 && record.model_gflops > 0);
    assert.ok(Date.parse(record.time) >= startedAt - 1000 && Date.parse(record.time) <= Date.now(), record.time);
    assert.equal(record.skipped_steps, 0);
    assert.equal(record.nan_steps, 0);
    assert.equal(record.loss_scale, undefined, 'no loss scale outside fp16 mode');
    assert.ok(record.rss_mb > 50 && record.rss_mb < 64 * 1024, `rss_mb ${record.rss_mb}`);
  }
  assert.ok(records[2].elapsed_ms >= records[1].elapsed_ms);
  // Megatron's log line: timestamp, step of total, consumed samples, ms a step, GFLOP/s per rank, lr, loss, grad norm, skipped and nan steps.
  assert.equal(lines.length, 3, lines.join(''));
  for (const [i, line] of lines.entries()) {
    assert.match(
      line,
      new RegExp(`^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z  step ${i + 1}/3  consumed samples ${4 * (i + 1)}  \\d+\\.\\d ms/step  \\d+\\.\\d\\d GFLOP/s per rank  lr \\d\\.\\d{3}e-\\d  loss ${result.losses[i]!.toFixed(4)}  grad norm \\d+\\.\\d{3}  skipped 0  nan 0\\n$`),
    );
  }
});

test('trainer - an aborted signal stops cleanly between steps', async () => {
  const config = tinyTrainConfig({ steps: 50 });
  const model = new GPT(config.model, fullModelSlice(config.model), config.seed);
  const abort = new AbortController();
  const trainer = new Trainer({
    config,
    model,
    dataset: patternDataset(32, 23),
    log: () => {},
    signal: abort.signal,
    hooks: [{ name: 'stop', afterStep: (_state, r) => void (r.step === 2 && abort.abort()) }],
  });
  const result = await trainer.fit();
  assert.equal(result.stopped, true);
  assert.equal(result.stepsDone, 2);
  trainer.dispose();
  model.dispose();
});

/** Both ranks of data parallel 2 in this process: each one's losses, every weight, and the sizes its all-reduces were given. */
async function trainDataParallelPair(config: TrainConfig, gradientBucketBytes?: number) {
  const allReduce = inProcessAllReduce(2);
  return Promise.all(
    [0, 1].map(async (rank) => {
      const calls: number[] = [];
      const model = new GPT(config.model, fullModelSlice(config.model), config.seed);
      const trainer = new Trainer({
        config,
        model,
        dataset: patternDataset(32, 23),
        log: () => {},
        dataParallel: { rank, size: 2, allReduce: (values) => (calls.push(values.length), allReduce(rank)(values)) },
        gradientBucketBytes,
      });
      const result = await trainer.fit();
      const weights = model.variables().map((v) => Array.from(v.dataSync()));
      trainer.dispose();
      model.dispose();
      return { losses: result.losses, weights, calls };
    }),
  );
}

test('trainer - data-parallel ranks with an all-reduce reproduce the single-process losses', async () => {
  const reference = await train(tinyTrainConfig({ batchSize: 4 }));
  const [rank0, rank1] = await trainDataParallelPair(tinyTrainConfig({ batchSize: 2, parallel: { data: 2 } }));
  assert.deepEqual(rank0.losses, rank1.losses);
  assert.deepEqual(rank0.weights, rank1.weights);
  rank0.losses.forEach((loss, i) => assert.ok(Math.abs(loss - reference.losses[i]) <= 1e-5 * Math.abs(loss), `step ${i}: ${loss} vs ${reference.losses[i]}`));
});

test('trainer - overlapGradReduce: gradient buckets all-reduced during the backward give the same bits as one all-reduce after it', async () => {
  // Two micro-batches: the first accumulates as usual, the last backward reduces as it goes. 4 KB
  // buckets: each block's gradients (13 KB) span several; the word embedding (3 MB) is one.
  const runDataParallel = (overlapGradReduce: boolean) =>
    trainDataParallelPair(tinyTrainConfig({ batchSize: 4, numMicroBatches: 2, steps: 3, parallel: { data: 2, overlapGradReduce } }), 4096);
  const [plain, overlapped] = [await runDataParallel(false), await runDataParallel(true)];
  for (const rank of [0, 1]) {
    assert.deepEqual(overlapped[rank].losses, plain[rank].losses, `rank ${rank} losses`);
    assert.deepEqual(overlapped[rank].weights, plain[rank].weights, `rank ${rank} weights`);
  }
  // One all-reduce a step without the option; several (the buckets) with it, covering the same values.
  assert.equal(plain[0].calls.length, 3);
  assert.ok(overlapped[0].calls.length > 3, `${overlapped[0].calls.length} all-reduces in 3 steps`);
  assert.equal(overlapped[0].calls.reduce((a, b) => a + b, 0), plain[0].calls.reduce((a, b) => a + b, 0));
});

test('trainer - resuming from a checkpoint gives the losses and weights of the run that never stopped', async () => {
  const root = join(mkdtempSync(join(tmpdir(), 'gpt-hybrid-ckpt-')), 'checkpoints');
  const uninterrupted = await train(tinyTrainConfig({ steps: 6 }));
  // First half: 3 steps, saved at the end.
  const first = tinyTrainConfig({ steps: 3 });
  const model = new GPT(first.model, fullModelSlice(first.model), first.seed);
  const trainerA = new Trainer({ config: first, model, dataset: patternDataset(32, 23), log: () => {}, checkpoint: { target: { root, keep: 2 }, every: 2 } });
  const before = (await trainerA.fit()).losses;
  trainerA.dispose();
  model.dispose();
  // Second half: a fresh process's worth of state, restored.
  const second = tinyTrainConfig({ steps: 6 });
  const resumedModel = new GPT(second.model, fullModelSlice(second.model), 999);
  const optimizer = new AdamOptimizer(second.optimizer);
  const { nextStep } = await restoreCheckpoint(root.replace(/checkpoints$/, ''), second, resumedModel, optimizer);
  assert.equal(nextStep, 3);
  const trainerB = new Trainer({ config: second, model: resumedModel, dataset: patternDataset(32, 23), log: () => {}, startStep: nextStep, optimizer });
  const after = (await trainerB.fit()).losses;
  assert.deepEqual([...before, ...after], uninterrupted.losses);
  assert.deepEqual(Array.from(resumedModel.variables()[2].dataSync()), uninterrupted.weights);
  trainerB.dispose();
  resumedModel.dispose();
});

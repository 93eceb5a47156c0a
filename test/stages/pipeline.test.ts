import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { initBackend } from '../../src/backend/select.ts';
import { withBackend } from '../../src/backend/with-backend.ts';
import type { TrainConfig } from '../../src/config/types.ts';
import { GPT } from '../../src/model/gpt.ts';
import { WORD_EMBEDDING, fullModelSlice, initialValues, paramsForSlice } from '../../src/model/params.ts';
import type { PipelineOp } from '../../src/scheduler/ops.ts';
import { Trainer } from '../../src/train/trainer.ts';
import { buildSchedule } from '../../src/scheduler/schedules.ts';
import { partitionForRun } from '../../src/parallel/run-partition.ts';
import type { ProcessGroup } from '../../src/comm/collectives.ts';
import { SharedWeights } from '../../src/shared-weights/shared-weights.ts';
import * as tf from '../../src/tf.ts';
import { runPipeline, stageTestConfig, stageTestDataset } from './pipeline-helpers.ts';
import { TraceRecorder } from '../../src/trace/trace.ts';

before(async () => {
  await initBackend('cpu', () => {});
});

const dataset = stageTestDataset(7);

function config(overrides: Record<string, unknown>): TrainConfig {
  return stageTestConfig(4, 11, overrides);
}

async function reference(batchSize: number, overrides: Record<string, unknown> = {}): Promise<number[]> {
  const c = config({ batchSize, ...overrides });
  const model = new GPT(c.model, fullModelSlice(c.model), c.seed);
  const trainer = new Trainer({ config: c, model, dataset, log: () => {} });
  const { losses } = await trainer.fit();
  trainer.dispose();
  model.dispose();
  return losses;
}

/** The scheduler's ops for one pipeline rank. */
const opsOf = (kind: 'gpipe' | '1f1b' | 'interleaved', stages: number, micro: number, chunks = 1) => {
  const schedule = buildSchedule(kind, stages, micro, chunks);
  return (rank: number): PipelineOp[] => schedule.ops[rank].map((op) => ({ ...op }));
};

function assertClose(actual: number[], expected: number[]) {
  assert.equal(actual.length, expected.length);
  actual.forEach((loss, i) => assert.ok(Math.abs(loss - expected[i]) <= 1e-4 * Math.abs(expected[i]), `step ${i + 1}: ${loss} vs ${expected[i]}`));
}

test('pipeline - 2 stages, 4 micro-batches, gpipe and 1f1b: same losses as one process; tied embeddings bit-identical', async () => {
  const expected = await reference(4);
  for (const kind of ['gpipe', '1f1b'] as const) {
    const run = await runPipeline(config({ parallel: { pipeline: 2 }, numMicroBatches: 4, schedule: kind }), dataset, 3, opsOf(kind, 2, 4));
    assertClose(run.losses, expected);
    assert.deepEqual([...run.embeddings.keys()], [0, 1]);
    assert.deepEqual(run.embeddings.get(0), run.embeddings.get(1));
  }
});

test('pipeline - dropout: stages and tensor shards drop what the single-process run drops', async () => {
  const withDropout = { model: { numLayers: 4, hiddenSize: 16, numAttentionHeads: 2, maxPositionEmbeddings: 16, embedDropRate: 0.1, attnDropRate: 0.1, dropRate: 0.1 } };
  const expected = await reference(4, withDropout);
  assert.notDeepEqual(expected, await reference(4), 'the rates change nothing');
  for (const layout of [{ pipeline: 2 }, { pipeline: 2, tensor: { size: 2 } }, { tensor: { size: 2 } }]) {
    const run = await runPipeline(config({ ...withDropout, parallel: layout, numMicroBatches: 4 }), dataset, 3, opsOf('1f1b', layout.pipeline ?? 1, 4));
    assertClose(run.losses, expected);
  }
});

test('pipeline - 2 stages x 2 chunks (interleaved layout) and 4 stages', async () => {
  const expected = await reference(4);
  assertClose((await runPipeline(config({ parallel: { pipeline: 2 }, numMicroBatches: 4, numChunks: 2 }), dataset, 3, opsOf('interleaved', 2, 4, 2))).losses, expected);
  assertClose((await runPipeline(config({ parallel: { pipeline: 4 }, numMicroBatches: 4 }), dataset, 3, opsOf('1f1b', 4, 4))).losses, expected);
});

test('pipeline - a balanced partition (the cheap LM head takes fewer blocks) equals one process', async () => {
  const fiveLayers = { model: { numLayers: 5, hiddenSize: 16, numAttentionHeads: 2, maxPositionEmbeddings: 16 } };
  const expected = await reference(4, fiveLayers);
  const balanced = config({ ...fiveLayers, parallel: { pipeline: 2 }, numMicroBatches: 4, partition: 'balanced' });
  // Uniform would give the last stage the odd block; this model's head costs a fraction of one.
  assert.deepEqual(partitionForRun(balanced), [[[0, 3]], [[3, 5]]]);
  assertClose((await runPipeline(balanced, dataset, 3, opsOf('1f1b', 2, 4))).losses, expected);
});

test('pipeline - data 2 x pipeline 2 equals one process', async () => {
  const expected = await reference(4);
  const run = await runPipeline(config({ parallel: { pipeline: 2, data: 2 }, batchSize: 2, numMicroBatches: 2 }), dataset, 3, opsOf('1f1b', 2, 2));
  assertClose(run.losses, expected);
});

test('pipeline - gradient clipping sees the whole model: same losses as one process with clipping', async () => {
  const clip = { optimizer: { lr: 1e-2, gradClip: 0.05 } };
  const c = config({ batchSize: 4, ...clip });
  const model = new GPT(c.model, fullModelSlice(c.model), c.seed);
  const trainer = new Trainer({ config: c, model, dataset, log: () => {} });
  const expected = (await trainer.fit()).losses;
  trainer.dispose();
  model.dispose();
  const run = await runPipeline(config({ parallel: { pipeline: 2 }, numMicroBatches: 4, ...clip }), dataset, 3, opsOf('1f1b', 2, 4));
  assertClose(run.losses, expected);
  assert.notDeepEqual(expected, await reference(4), 'the clip must bite for this test to mean anything');
});

test('tensor parallel - tp 2, pp 2 x tp 2 and dp 2 x tp 2 equal one process; tied shards bit-identical per tp rank', async () => {
  const expected = await reference(4);
  for (const [parallel, extra] of [
    [{ tensor: { size: 2 } }, {}],
    [{ pipeline: 2, tensor: { size: 2 } }, { numMicroBatches: 4 }],
    [{ data: 2, tensor: { size: 2 } }, { batchSize: 2 }],
  ] as const) {
    const c = config({ parallel, ...extra });
    const run = await runPipeline(c, dataset, 3, opsOf('1f1b', c.parallel.pipeline, c.numMicroBatches));
    // Tensor parallelism reorders float32 sums (row-parallel partial sums): the issue allows 1e-4.
    assertClose(run.losses, expected);
    if (c.parallel.pipeline > 1) {
      // World order tp-dp-pp: stage 0 holds ranks 0, 1 (tp 0, 1); stage 1 holds ranks 2, 3.
      assert.deepEqual(run.embeddings.get(0), run.embeddings.get(2));
      assert.deepEqual(run.embeddings.get(1), run.embeddings.get(3));
      assert.notDeepEqual(run.embeddings.get(0), run.embeddings.get(1));
    }
  }
});

test('fp16 - float16 on the wire tracks the float32 run; an overflowing scale skips the same steps on every rank', async () => {
  const expected = await reference(4);
  const halves = await runPipeline(config({ parallel: { pipeline: 2, tensor: { size: 2 } }, numMicroBatches: 4, fp16: { mode: 'naive' } }), dataset, 3, opsOf('1f1b', 2, 4));
  halves.losses.forEach((loss, i) => assert.ok(Math.abs(loss - expected[i]) <= 1e-2 * expected[i], `step ${i + 1}: ${loss} vs ${expected[i]}`));
  assert.ok(halves.skipped.every((ranks) => ranks.every((s) => !s)));
  // 2^40 overflows float16 (max 65504) in the gradients sent between stages: with hysteresis 1 every
  // overflowing step is skipped and halves the scale, on every rank at once, until it fits.
  const huge = await runPipeline(config({ parallel: { pipeline: 2 }, numMicroBatches: 4, fp16: { mode: 'naive', initialScale: 2 ** 40, hysteresis: 1 } }), dataset, 4, opsOf('1f1b', 2, 4));
  for (const ranks of huge.skipped) assert.equal(new Set(ranks).size, 1, 'ranks disagree on skipping');
  assert.deepEqual(huge.skipped.map((ranks) => ranks[0]), [true, true, true, true]);
  // Skipped steps leave the weights as initialized.
  const c = config({});
  const spec = paramsForSlice(c.model, fullModelSlice(c.model)).find((p) => p.name === WORD_EMBEDDING)!;
  assert.deepEqual(huge.embeddings.get(0), initialValues(spec, c.seed));
});

test('comm.wirePrecision - bfloat16 and float16 activations on the wire track the float32 run', async () => {
  const expected = await reference(4);
  for (const wirePrecision of ['bfloat16', 'float16']) {
    const run = await runPipeline(config({ parallel: { pipeline: 2 }, numMicroBatches: 4, comm: { wirePrecision } }), dataset, 3, opsOf('1f1b', 2, 4));
    run.losses.forEach((loss, i) => assert.ok(Math.abs(loss - expected[i]) <= 1e-2 * expected[i], `${wirePrecision} step ${i + 1}: ${loss} vs ${expected[i]}`));
    assert.ok(run.losses.some((loss, i) => loss !== expected[i]), `${wirePrecision}: the losses are float32's bit for bit, so nothing travelled at lower precision`);
  }
});

test('pipeline - activation checkpointing (recompute in backward) gives the same losses as saved activations', async () => {
  const expected = await reference(4);
  const recompute = await runPipeline(config({ parallel: { pipeline: 2 }, numMicroBatches: 4, model: { numLayers: 4, hiddenSize: 16, numAttentionHeads: 2, maxPositionEmbeddings: 16, checkpoint: true } }), dataset, 3, opsOf('1f1b', 2, 4));
  assertClose(recompute.losses, expected);
});

/** The tied gradient's reduction as it was before the first stage sent only its rows: one all-reduce of the whole gradients. */
class AllReduceSharedWeights extends SharedWeights {
  private readonly tied: { group: ProcessGroup; names: string[] }[] = [];

  override register(group: ProcessGroup, names: string[]): void {
    super.register(group, names);
    this.tied.push({ group, names });
  }

  override startReduction(): void {}

  override async reduceGradients(grads: Map<string, tf.Tensor>): Promise<void> {
    for (const { group, names } of this.tied) {
      if (group.size === 1) continue;
      const [name] = names;
      const summed = await group.allReduce(grads.get(name)!.dataSync().slice() as Float32Array, 'sum');
      const shape = grads.get(name)!.shape;
      grads.get(name)!.dispose();
      grads.set(name, tf.tensor(summed, shape));
    }
  }
}

test('pipeline - the first stage sending only its rows gives the tied embedding the bits of one all-reduce, in every layout', async () => {
  // The dataset's ids are 0..22: with a vocabulary of 64 the first stage sends 23 of 64 rows (per tp shard: 23 of 32, and row 0 alone).
  for (const [overrides, ops] of [
    [{ parallel: { pipeline: 2 }, numMicroBatches: 4, gradientAccumulation: 2 }, opsOf('1f1b', 2, 4)],
    [{ parallel: { pipeline: 2 }, numMicroBatches: 4, numChunks: 2 }, opsOf('interleaved', 2, 4, 2)],
    [{ parallel: { pipeline: 2, tensor: { size: 2 } }, numMicroBatches: 2 }, opsOf('1f1b', 2, 2)],
    [{ parallel: { pipeline: 2, data: 2 }, batchSize: 2, numMicroBatches: 2 }, opsOf('1f1b', 2, 2)],
    [{ parallel: { pipeline: 2 }, numMicroBatches: 2, model: { numLayers: 4, hiddenSize: 16, numAttentionHeads: 2, maxPositionEmbeddings: 16, checkpoint: true } }, opsOf('1f1b', 2, 2)],
  ] as const) {
    const resolved = config({ batchSize: 4, ...overrides });
    await assertSameTiedBits({ ...resolved, model: { ...resolved.model, vocabSize: 64 } }, ops, JSON.stringify(overrides));
  }
  // On wasm the last stage sends its gradient straight from the heap.
  const c = config({ batchSize: 4, parallel: { pipeline: 2 }, numMicroBatches: 2 });
  await withBackend('wasm', () => assertSameTiedBits({ ...c, model: { ...c.model, vocabSize: 64 } }, opsOf('1f1b', 2, 2), 'wasm'));
});

async function assertSameTiedBits(c: TrainConfig, ops: (rank: number) => PipelineOp[], what: string): Promise<void> {
  const rows = await runPipeline(c, dataset, 2, ops);
  const allReduce = await runPipeline(c, dataset, 2, ops, { sharedWeights: () => new AllReduceSharedWeights() });
  assert.deepEqual(rows.losses, allReduce.losses, what);
  assert.ok(rows.embeddings.size >= 2);
  for (const [rank, embedding] of allReduce.embeddings) {
    assert.ok(Buffer.from(rows.embeddings.get(rank)!.buffer).equals(Buffer.from(embedding.buffer)), `rank ${rank} of ${what}`);
  }
}

test('pipeline - overlapGradReduce: data 2 buckets go out during the last backward (the untied word embedding with the first), with the bits of one all-reduce after it, alone, beside tensor 2 and beside pipeline 2', async () => {
  const layouts: [Record<string, unknown>, ReturnType<typeof opsOf>][] = [
    [{ data: 2 }, opsOf('1f1b', 1, 2)],
    [{ data: 2, tensor: { size: 2 } }, opsOf('1f1b', 1, 2)],
    [{ pipeline: 2, data: 2 }, opsOf('1f1b', 2, 2)],
  ];
  for (const [parallel, ops] of layouts) {
    const traces = [0, 1, 2, 3].map((rank) => new TraceRecorder(rank, `rank ${rank}`));
    const run = (overlapGradReduce: boolean, trace?: (rank: number) => TraceRecorder) =>
      runPipeline(config({ parallel: { ...parallel, overlapGradReduce }, batchSize: 2, numMicroBatches: 2 }), dataset, 3, ops, { gradientBucketBytes: 4096, trace });
    const overlapped = await run(true, (rank) => traces[rank]);
    const afterBackward = await run(false);
    const layout = JSON.stringify(parallel);
    assert.deepEqual(overlapped.losses, afterBackward.losses, layout);
    for (const [rank, embedding] of afterBackward.embeddings) assert.deepEqual(overlapped.embeddings.get(rank), embedding, `${layout} rank ${rank}'s word embedding`);
    const world = ((parallel.pipeline as number | undefined) ?? 1) * 2 * ((parallel.tensor as { size: number } | undefined)?.size ?? 1);
    for (const trace of traces.slice(0, world)) {
      const ofStep = trace.events.filter((event) => event.ph === 'X' && event.args?.step === 2);
      const reductions = ofStep.filter((event) => event.name === 'all-reduce data parallel');
      const backwardEnd = Math.max(...ofStep.filter((event) => event.args?.op === 'backward').map((event) => event.ts + (event.dur ?? 0)));
      assert.ok(reductions.length > 1, `${layout} rank ${trace.rank}: ${reductions.length} all-reduce buckets in step 2`);
      assert.ok(Math.min(...reductions.map((event) => event.ts)) < backwardEnd, `${layout} rank ${trace.rank}: the first bucket waited for the backward to end`);
    }
  }
});

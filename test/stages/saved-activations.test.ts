// Tests: the stage's "saved activations" counter on the timeline: what 1F1B holds at peak on the first
// stage against GPipe (p of m micro-batches), and nothing held once a step is done.
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { initBackend } from '../../src/backend/select.ts';
import type { TokenizedDataset } from '../../src/dataset/webtext.ts';
import { buildSchedule } from '../../src/scheduler/schedules.ts';
import { TraceRecorder } from '../../src/trace/trace.ts';
import { counterPeak } from '../../bench/trace-analysis.ts';
import { resolveTinyConfig } from '../support/tiny-train-config.ts';
import { runPipeline } from './pipeline-helpers.ts';

before(async () => {
  await initBackend('cpu', () => {});
});

const SEQ_LEN = 8;
const dataset: TokenizedDataset = {
  inputIds: Int32Array.from({ length: 16 * SEQ_LEN }, (_, i) => (i * 5) % 23),
  attentionMask: new Uint8Array(16 * SEQ_LEN).fill(1),
  numSamples: 16,
  seqLen: SEQ_LEN,
};

async function firstStageCounter(schedule: 'gpipe' | '1f1b'): Promise<{ peak: number; last: number }> {
  const model = { numLayers: 2, hiddenSize: 16, numAttentionHeads: 2, maxPositionEmbeddings: 16 };
  const config = resolveTinyConfig({ model, seqLen: SEQ_LEN, steps: 1, seed: 3, vocabSize: 24 }, { parallel: { pipeline: 2 }, numMicroBatches: 4, schedule });
  const ops = buildSchedule(schedule, 2, 4, 1).ops;
  const traces = [new TraceRecorder(0, 'stage 0'), new TraceRecorder(1, 'stage 1')];
  await runPipeline(config, dataset, 1, (rank) => ops[rank].map((op) => ({ ...op })), { trace: (rank) => traces[rank] });
  const counters = traces[0].events.filter((e) => e.ph === 'C' && e.name === 'saved activations');
  return { peak: counterPeak(traces[0].events, 'saved activations', 0, 'bytes') ?? 0, last: Number(counters.at(-1)?.args?.bytes) };
}

test('stage - the first stage holds 2 of 4 micro-batches of activations under 1F1B, all 4 under GPipe, none after the step', async () => {
  const gpipe = await firstStageCounter('gpipe');
  const oneFOneB = await firstStageCounter('1f1b');
  assert.ok(gpipe.peak > 0, 'GPipe recorded no saved activations');
  assert.equal(oneFOneB.peak / gpipe.peak, 2 / 4);
  assert.equal(gpipe.last, 0);
  assert.equal(oneFOneB.last, 0);
});

// Tests: the planner (src/planner/plan.ts, memory.ts, param-count.ts), against hand counts.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MODEL_DEFAULTS, resolveModelConfig, type GPTConfig } from '../../src/model/config.ts';
import { countParameters } from '../../src/model/params.ts';
import { ParallelGrid } from '../../src/parallel/grid.ts';
import { blockActivationElements, headActivationElements } from '../../src/planner/memory.ts';
import { megatronParameterCount } from '../../src/planner/param-count.ts';
import { planTraining, type PlanInput } from '../../src/planner/plan.ts';
import { activationLimit } from '../../src/scheduler/memory-bound.ts';
import { buildSchedule } from '../../src/scheduler/schedules.ts';
import { inFlightByOrder } from '../../src/scheduler/measure.ts';

function input(model: GPTConfig, over: Partial<Omit<PlanInput, 'model'>> & { pp?: number; tp?: number; dp?: number } = {}): PlanInput {
  const { pp = 1, tp = 1, dp = 1, ...rest } = over;
  return {
    model,
    parallel: { data: dp, pipeline: pp, tensor: { size: tp } },
    numMicroBatches: pp,
    numChunks: 1,
    batchSize: 8,
    seqLen: 128,
    ...rest,
  };
}

const gpt3 = resolveModelConfig({ preset: 'gpt3' });

test('plan - Megatron\'s formula: the literal expression, ~175 billion for gpt3, the table holds the final LayerNorm more', () => {
  for (const model of [gpt3, resolveModelConfig({ preset: 'gpt2-exlarge' }), resolveModelConfig({ preset: 'tiny' })]) {
    const { numLayers: l, hiddenSize: h, vocabSize: V, maxPositionEmbeddings: s } = model;
    const literal = 12 * l * h * h * (1 + 13 / (12 * h) + (V + s) / (12 * l * h));
    assert.ok(Math.abs(megatronParameterCount(model) - literal) < 1e-6 * literal);
    assert.equal(countParameters(model) - megatronParameterCount(model), 2 * h);
  }
  assert.equal(megatronParameterCount(gpt3), 174_604_812_288);
  assert.ok(Math.abs(megatronParameterCount(gpt3) - 175e9) / 175e9 < 0.01);
  // Another MLP ratio: the same terms (fc1 and fc2 are r·h² each).
  const wide = { ...MODEL_DEFAULTS, numLayers: 2, hiddenSize: 8, mlpRatio: 2, vocabSize: 10, maxPositionEmbeddings: 4 };
  assert.equal(megatronParameterCount(wide), countParameters(wide) - 16);
});

test('plan - gpt3 at pipeline 8 x tensor 8: 64 ranks, each rank\'s share, summing to the model plus the copies', () => {
  const plan = planTraining(input(gpt3, { pp: 8, tp: 8, numMicroBatches: 8, batchSize: 8, seqLen: 2048 }));
  assert.equal(plan.ranks.length, 64);
  assert.equal(plan.grid.world, 64);
  assert.equal(plan.totalParams, megatronParameterCount(gpt3));
  const grid = new ParallelGrid({ data: 1, pipeline: 8, tensor: 8 });
  const h = 12288;
  const V = 50304;
  const s = 2048;
  // A block on one of 8 tp ranks: 12h² split, QKV and fc1 biases (7h) split, LayerNorms and row biases (6h) whole.
  const blockShare = (12 * h * h) / 8 + (7 * h) / 8 + 6 * h;
  for (const r of plan.ranks) {
    assert.deepEqual({ dp: r.dp, pp: r.pp, tp: r.tp }, grid.coordinates(r.rank));
    assert.deepEqual(r.layers, [[12 * r.pp, 12 * r.pp + 12]]);
    const expected = 12 * blockShare + (r.pp === 0 ? V * h / 8 + s * h : 0) + (r.pp === 7 ? V * h / 8 + 2 * h : 0);
    assert.equal(r.params, expected, `rank ${r.rank}`);
    assert.equal(r.tiedCopyParams, r.pp === 7 ? V * h / 8 : 0);
    assert.deepEqual(
      { params: r.bytes.params, grads: r.bytes.grads, optimizer: r.bytes.optimizer },
      { params: 4 * r.params, grads: 4 * r.params, optimizer: 8 * r.params },
    );
    assert.equal(r.totalBytes, r.bytes.params + r.bytes.grads + r.bytes.optimizer + r.bytes.activations);
    assert.equal(r.microBatchesInFlight, 8 - r.pp);
  }
  // The whole model once, plus the last stage's tied copy (V·h over its 8 tp ranks), plus 7 more copies of
  // every replicated parameter (96 blocks x 6h, the position embedding, the final norm).
  const sum = plan.ranks.reduce((n, r) => n + r.params, 0);
  assert.equal(sum, plan.tableParams + V * h + 7 * (96 * 6 * h + s * h + 2 * h));
  assert.ok(Math.abs(sum - 175e9) / 175e9 < 0.01);
  // 1F1B: the first stage keeps the most activations, stage k keeps (8 - k)/8 of a 12-layer stage's worth.
  const stage = (pp: number) => plan.ranks.find((r) => r.pp === pp && r.tp === 0)!.bytes.activations;
  assert.equal(stage(3), (stage(1) * 5) / 7);
  assert.ok(stage(0) > stage(1));
});

test('plan - a tiny model against a hand count, per rank and per byte', () => {
  // h 16, 2 heads, MLP 64, vocab 40, 8 positions, 4 layers over pp 2 x tp 2 x dp 2.
  const model: GPTConfig = { ...MODEL_DEFAULTS, numLayers: 4, hiddenSize: 16, numAttentionHeads: 2, vocabSize: 40, maxPositionEmbeddings: 8 };
  const plan = planTraining(input(model, { pp: 2, tp: 2, dp: 2, numMicroBatches: 2, batchSize: 4, seqLen: 8 }));
  assert.equal(plan.ranks.length, 8);
  assert.equal(plan.microBatchSize, 2);
  // Per block per tp rank: QKV 16x24 + 24, proj 8x16 + 16, fc1 16x32 + 32, fc2 32x16 + 16, LayerNorms 64.
  const block = 16 * 24 + 24 + 8 * 16 + 16 + 16 * 32 + 32 + 32 * 16 + 16 + 64;
  assert.equal(block, 1688);
  const first = 2 * block + 20 * 16 + 8 * 16;
  const last = 2 * block + 20 * 16 + 32;
  for (const r of plan.ranks) assert.equal(r.params, r.pp === 0 ? first : last, `rank ${r.rank}`);
  // Order tp-dp-pp: ranks 0-3 are stage 0 (tp fastest), 4-7 stage 1.
  assert.deepEqual(plan.ranks.map((r) => [r.dp, r.pp, r.tp]), [[0, 0, 0], [0, 0, 1], [1, 0, 0], [1, 0, 1], [0, 1, 0], [0, 1, 1], [1, 1, 0], [1, 1, 1]]);

  // Activations by hand, float32, N = 2 samples x 8 tokens = 16 rows, tp 2:
  // per layer 4·N·h whole + (3h + a·s + h + 2·4h)·N / 2 split = 16·(64 + (48 + 16 + 16 + 128)/2) = 2688 elements.
  const perLayer = 16 * (64 + (48 + 16 + 16 + 128) / 2);
  assert.equal(blockActivationElements({ model, microBatchSize: 2, seqLen: 8, tp: 2 }), perLayer);
  // Stage 0 holds 2 micro-batches of 2 layers; stage 1 one micro-batch of 2 layers plus the head:
  // final norm in/out 2·N·h and the vocab-parallel logits and exponentials 2·N·V/2.
  const head = 16 * (2 * 16 + 40);
  assert.equal(headActivationElements({ model, microBatchSize: 2, seqLen: 8, tp: 2 }), head);
  assert.equal(plan.ranks[0]!.bytes.activations, 4 * 2 * 2 * perLayer);
  assert.equal(plan.ranks[4]!.bytes.activations, 4 * (2 * perLayer + head));
});

test('plan - dropout masks, checkpointing and the schedule change the activation estimate as documented', () => {
  const model = resolveModelConfig({ preset: 'tiny' }); // h 64, 4 heads
  const shape = { microBatchSize: 1, seqLen: 16, tp: 1 };
  const plain = blockActivationElements({ model, ...shape });
  assert.equal(plain, 16 * (16 * 64 + 4 * 16));
  assert.equal(blockActivationElements({ model: { ...model, dropRate: 0.1 }, ...shape }), plain + 2 * 16 * 64);
  assert.equal(blockActivationElements({ model: { ...model, attnDropRate: 0.1 }, ...shape }), plain + 2 * 16 * 4 * 16);

  const base = input(model, { pp: 2, numMicroBatches: 4, batchSize: 4, seqLen: 16 });
  const oneF = planTraining(base);
  const gpipe = planTraining(base, { schedule: 'gpipe' });
  assert.equal(oneF.schedule, '1f1b');
  assert.deepEqual(oneF.ranks.map((r) => r.microBatchesInFlight), [2, 1]);
  assert.deepEqual(gpipe.ranks.map((r) => r.microBatchesInFlight), [4, 4]);
  assert.equal(gpipe.ranks[0]!.bytes.activations, 2 * oneF.ranks[0]!.bytes.activations);
  assert.ok(gpipe.ranks[1]!.bytes.activations > oneF.ranks[1]!.bytes.activations);
  // Checkpointing keeps each block's input per micro-batch, plus one block's full set for the recompute.
  const checkpointed = planTraining({ ...base, model: { ...model, checkpoint: true } });
  assert.equal(checkpointed.ranks[0]!.bytes.activations, 4 * (2 * 2 * 16 * 64 + plain));
  assert.deepEqual(checkpointed.ranks.map((r) => r.params), oneF.ranks.map((r) => r.params));
  // Several chunks: the interleaved schedule by default, with Megatron's warm-up.
  const interleaved = planTraining({ ...base, model: { ...model, numLayers: 8 }, numChunks: 2 });
  assert.equal(interleaved.schedule, 'interleaved');
  assert.deepEqual(interleaved.ranks.map((r) => r.layers), [[[0, 2], [4, 6]], [[2, 4], [6, 8]]]);
  assert.deepEqual(interleaved.ranks.map((r) => r.microBatchesInFlight), [5, 3]);
  assert.equal(planTraining({ ...base, schedule: 'gpipe' }).schedule, 'gpipe');
});

test('plan - micro-batches in flight per schedule', () => {
  assert.deepEqual([0, 1, 2, 3].map((r) => activationLimit('1f1b', 4, r, 8, 1)), [4, 3, 2, 1]);
  assert.deepEqual([0, 1, 2, 3].map((r) => activationLimit('1f1b', 4, r, 2, 1)), [2, 2, 2, 1]);
  assert.deepEqual([0, 3].map((r) => activationLimit('gpipe', 4, r, 8, 1)), [8, 8]);
  // Megatron interleaved: (pp - rank - 1)·2 + (chunks - 1)·pp warm-up forwards, plus the first steady one.
  assert.deepEqual([0, 1, 2, 3].map((r) => activationLimit('interleaved', 4, r, 8, 2)), [11, 9, 7, 5]);
  assert.equal(activationLimit('interleaved', 4, 0, 4, 3), 12);
  // What the built schedules hold, where the planner's own formula once said less (M == P, and one chunk).
  for (const [kind, pp, m, chunks] of [['interleaved', 4, 4, 2], ['interleaved', 4, 4, 1], ['interleaved', 2, 4, 1], ['zb-h1', 4, 8, 1]] as const) {
    const built = buildSchedule(kind, pp, m, chunks).ops.map((ops) => inFlightByOrder(ops));
    assert.deepEqual(built.map((_, r) => activationLimit(kind, pp, r, m, chunks)), built, `${kind} p=${pp} m=${m} v=${chunks}`);
  }
});

test('plan - replicas, grid order and refusals', () => {
  const model = resolveModelConfig({ preset: 'tiny' });
  const plan = planTraining(input(model, { pp: 2, tp: 2, dp: 3, numMicroBatches: 2 }), { order: 'pp-tp-dp' });
  assert.equal(plan.grid.order, 'pp-tp-dp');
  assert.deepEqual(plan.ranks.slice(0, 4).map((r) => [r.pp, r.tp, r.dp]), [[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]]);
  for (const r of plan.ranks) {
    const replica0 = plan.ranks.find((o) => o.dp === 0 && o.pp === r.pp && o.tp === r.tp)!;
    assert.deepEqual({ ...r, rank: 0, dp: 0 }, { ...replica0, rank: 0, dp: 0 });
  }
  assert.throws(() => planTraining(input(model, { tp: 3 })), /numAttentionHeads 4 is not divisible by tensor-parallel size 3/);
  assert.throws(() => planTraining(input(model, { pp: 2, numMicroBatches: 3, batchSize: 8 })), /batchSize 8 is not divisible by numMicroBatches 3/);
  assert.throws(() => planTraining(input(model, { pp: 8 })), /cannot split 4 layers over 8 pipeline stages x 1 chunks = 8 parts/);
  assert.throws(() => planTraining({ ...input(model, { pp: 2, numChunks: 2 }), schedule: '1f1b' }), /numChunks 2 needs the interleaved or zbv schedule, not 1f1b/);
});

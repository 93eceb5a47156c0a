// Tests: the tensor-parallel sharding table (src/model/sharding.ts).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fullModelSlice, initialValues, numElements, paramsForSlice, type ParamSpec, type Region } from '../../src/model/params.ts';
import { paramsForRank, shardKind, shardRegion, shardShape, splitAxis, tensorParallelProblems } from '../../src/model/sharding.ts';
import { tinyConfig } from './helpers.ts';

// 4 heads of 3 dims, MLP 48 wide, a vocabulary of 36 rows: splits over 1, 2 and 4 ranks.
const config = tinyConfig({ numLayers: 2, hiddenSize: 12, numAttentionHeads: 4, vocabSize: 36, maxPositionEmbeddings: 8 });
const allParams = paramsForSlice(config, fullModelSlice(config));
const byName = (name: string): ParamSpec => allParams.find((p) => p.name === name)!;

/** Writes `values` (a region's elements, row-major) into `full` at the region, counting every write in `writes`. */
function scatterRegion(spec: ParamSpec, region: Region, values: Float32Array, full: Float32Array, writes: Uint8Array): void {
  const rank = spec.shape.length;
  for (let i = 0; i < values.length; i++) {
    let index = 0;
    let rest = i;
    for (let axis = rank - 1; axis >= 0; axis--) {
      const coordinate = (rest % region.size[axis]!) + region.begin[axis]!;
      rest = Math.floor(rest / region.size[axis]!);
      index += coordinate * numElements(spec.shape.slice(axis + 1));
    }
    full[index] = values[i]!;
    writes[index]! += 1;
  }
}

test('sharding - every parameter has its Megatron split kind', () => {
  const expected: Record<string, string> = {
    'embedding.wordEmbeddings': 'vocab',
    'embedding.positionEmbeddings': 'replicated',
    'blocks.1.ln1.gamma': 'replicated',
    'blocks.1.ln1.beta': 'replicated',
    'blocks.1.attn.qkv.weight': 'column',
    'blocks.1.attn.qkv.bias': 'column',
    'blocks.1.attn.proj.weight': 'row',
    'blocks.1.attn.proj.bias': 'replicated',
    'blocks.1.ln2.gamma': 'replicated',
    'blocks.1.ln2.beta': 'replicated',
    'blocks.1.mlp.fc1.weight': 'column',
    'blocks.1.mlp.fc1.bias': 'column',
    'blocks.1.mlp.fc2.weight': 'row',
    'blocks.1.mlp.fc2.bias': 'replicated',
    'norm.gamma': 'replicated',
    'norm.beta': 'replicated',
  };
  for (const [name, kind] of Object.entries(expected)) assert.equal(shardKind(byName(name)), kind, name);
  assert.equal(splitAxis(byName('blocks.0.mlp.fc1.weight')), 1);
  assert.equal(splitAxis(byName('blocks.0.mlp.fc1.bias')), 0);
  assert.equal(splitAxis(byName('blocks.0.mlp.fc2.weight')), 0);
  assert.equal(splitAxis(byName('embedding.wordEmbeddings')), 0);
  assert.equal(splitAxis(byName('norm.gamma')), -1);
});

test('sharding - the tp shards of every split parameter partition the full tensor and reproduce its initial values', () => {
  for (const tp of [1, 2, 4]) {
    for (const spec of allParams) {
      const expected = initialValues(spec, 11);
      const kind = shardKind(spec);
      if (kind === 'replicated') {
        for (let r = 0; r < tp; r++) assert.deepEqual(initialValues(spec, 11, shardRegion(spec, tp, r, config.numAttentionHeads)), expected, `${spec.name} tp ${tp}`);
        continue;
      }
      const rebuilt = new Float32Array(expected.length);
      const writes = new Uint8Array(expected.length);
      for (let r = 0; r < tp; r++) {
        const region = shardRegion(spec, tp, r, config.numAttentionHeads);
        assert.deepEqual(region.size, shardShape(spec, tp, config.numAttentionHeads));
        scatterRegion(spec, region, initialValues(spec, 11, region), rebuilt, writes);
      }
      assert.ok(writes.every((w) => w === 1), `${spec.name} tp ${tp}: every element is held by exactly one shard`);
      assert.deepEqual(rebuilt, expected, `${spec.name} tp ${tp}`);
    }
  }
});

test('sharding - shards concatenated in tp order along the split axis are the full tensor', () => {
  // Column shards of [12, 36] side by side, row shards stacked: the concatenation a tp all-gather makes.
  const qkv = byName('blocks.0.attn.qkv.weight');
  const full = initialValues(qkv, 5);
  const shards = [0, 1].map((r) => initialValues(qkv, 5, shardRegion(qkv, 2, r)));
  const [rows, cols] = qkv.shape as [number, number];
  for (let i = 0; i < rows; i++) {
    const row = [...shards[0]!.subarray(i * 18, (i + 1) * 18), ...shards[1]!.subarray(i * 18, (i + 1) * 18)];
    assert.deepEqual(Float32Array.from(row), full.subarray(i * cols, (i + 1) * cols));
  }
  const fc2 = byName('blocks.0.mlp.fc2.weight');
  const stacked = Float32Array.from([0, 1, 2, 3].flatMap((r) => [...initialValues(fc2, 5, shardRegion(fc2, 4, r))]));
  assert.deepEqual(stacked, initialValues(fc2, 5));
});

test('sharding - QKV and the projection split between whole heads', () => {
  const headDim = config.hiddenSize / config.numAttentionHeads; // 3
  const qkv = byName('blocks.0.attn.qkv.weight');
  const proj = byName('blocks.0.attn.proj.weight');
  for (const tp of [1, 2, 4]) {
    const headsPerRank = config.numAttentionHeads / tp;
    for (let r = 0; r < tp; r++) {
      // [head][q|k|v][headDim] columns: rank r holds heads [r·headsPerRank, (r+1)·headsPerRank).
      assert.deepEqual(shardRegion(qkv, tp, r), { begin: [0, r * headsPerRank * 3 * headDim], size: [12, headsPerRank * 3 * headDim] });
      assert.deepEqual(shardRegion(byName('blocks.0.attn.qkv.bias'), tp, r), { begin: [r * headsPerRank * 3 * headDim], size: [headsPerRank * 3 * headDim] });
      // The projection's input rows are the context's columns, [head][headDim].
      assert.deepEqual(shardRegion(proj, tp, r), { begin: [r * headsPerRank * headDim, 0], size: [headsPerRank * headDim, 12] });
    }
  }
  // Row-parallel biases are added once after the all-reduce: whole on every rank.
  assert.deepEqual(shardRegion(byName('blocks.0.attn.proj.bias'), 4, 3), { begin: [0], size: [12] });
  assert.deepEqual(shardRegion(byName('blocks.0.mlp.fc2.bias'), 4, 3), { begin: [0], size: [12] });
  assert.deepEqual(shardRegion(byName('embedding.wordEmbeddings'), 4, 2), { begin: [18, 0], size: [9, 12] });
});

test('sharding - what does not divide is refused, naming the numbers', () => {
  const qkv = byName('blocks.0.attn.qkv.weight');
  // 36 columns split over 3 ranks, but 4 heads do not: the head check catches it.
  assert.throws(() => shardRegion(qkv, 3, 0, 4), /blocks\.0\.attn\.qkv\.weight: 4 attention heads do not split over tensor-parallel size 3/);
  assert.throws(() => shardRegion(byName('blocks.0.attn.proj.weight'), 3, 0, 4), /4 attention heads do not split over tensor-parallel size 3/);
  assert.throws(() => shardRegion(byName('blocks.0.mlp.fc1.weight'), 5, 0), /its 48 output columns do not split evenly over tensor-parallel size 5/);
  assert.throws(() => shardRegion(byName('blocks.0.mlp.fc2.weight'), 5, 0), /its 48 input rows do not split evenly over tensor-parallel size 5/);
  assert.throws(() => shardRegion(byName('embedding.wordEmbeddings'), 5, 0), /36 vocabulary rows do not split evenly over tensor-parallel size 5; pad model.vocabSize up to a multiple of 5/);
  assert.throws(() => shardRegion(qkv, 2, 2), /tensor-parallel rank 2 is outside 0\.\.1/);
  assert.throws(() => shardRegion(qkv, 0, 0), /tensor-parallel size must be a positive integer, got 0/);
  assert.throws(() => shardKind({ name: 'blocks.0.attn.rotary', shape: [4], init: { kind: 'zeros' } }), /no tensor-parallel rule for parameter blocks\.0\.attn\.rotary/);

  assert.deepEqual(tensorParallelProblems(config, 4), []);
  const problems = tensorParallelProblems(tinyConfig({ hiddenSize: 10, numAttentionHeads: 5, vocabSize: 50257, mlpRatio: 3 }), 4);
  assert.equal(problems.length, 3);
  assert.match(problems[0]!, /numAttentionHeads 5 is not divisible by tensor-parallel size 4/);
  assert.match(problems[1]!, /MLP width 30 .* not divisible by tensor-parallel size 4/);
  assert.match(problems[2]!, /vocabSize 50257 is not divisible by tensor-parallel size 4/);
  assert.throws(() => paramsForRank(config, { layerRanges: [[0, 2]], tp: 3, tpRank: 0 }), /the model does not split over 3 tensor-parallel ranks: numAttentionHeads 4 is not divisible by tensor-parallel size 3/);
  assert.throws(() => paramsForRank(config, { layerRanges: [[1, 3]], tp: 1, tpRank: 0 }), /layer range \[1, 3\) is not a non-empty range within the model's 2 layers/);
});

test('sharding - a rank holds its chunks\' slices, each parameter as its tp shard', () => {
  const names = (held: ReturnType<typeof paramsForRank>) => held.map((p) => p.spec.name);
  const first = paramsForRank(config, { layerRanges: [[0, 1]], tp: 2, tpRank: 1 });
  assert.deepEqual(names(first).slice(0, 3), ['embedding.wordEmbeddings', 'embedding.positionEmbeddings', 'blocks.0.ln1.gamma']);
  assert.ok(!names(first).includes('norm.gamma'));
  const last = paramsForRank(config, { layerRanges: [[1, 2]], tp: 2, tpRank: 1 });
  // The last stage's own copy of the tied word embedding, the same vocabulary shard as the first stage's.
  assert.equal(last[0]!.spec.name, 'embedding.wordEmbeddings');
  assert.deepEqual(last[0]!.region, first[0]!.region);
  assert.ok(names(last).includes('norm.beta') && !names(last).includes('embedding.positionEmbeddings'));
  const fc1 = last.find((p) => p.spec.name === 'blocks.1.mlp.fc1.weight')!;
  assert.deepEqual(fc1.region, { begin: [0, 24], size: [12, 24] });
  assert.equal(fc1.numel, 12 * 24);

  // Chunks of one rank (interleaved): one list, the word embedding held once though both ends are here.
  const both = paramsForRank(config, { layerRanges: [[0, 1], [1, 2]], tp: 1, tpRank: 0 });
  assert.deepEqual(names(both), allParams.map((p) => p.name));

  // Over the tp ranks, the split elements add up to the full parameters; the replicated ones repeat.
  const perRank = [0, 1, 2, 3].map((tpRank) => paramsForRank(config, { layerRanges: [[0, 2]], tp: 4, tpRank }));
  const split = perRank.flat().filter((p) => p.kind !== 'replicated').reduce((n, p) => n + p.numel, 0);
  const fullSplit = allParams.filter((p) => shardKind(p) !== 'replicated').reduce((n, p) => n + numElements(p.shape), 0);
  assert.equal(split, fullSplit);
});

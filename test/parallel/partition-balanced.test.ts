// partitionBalanced: the cheapest bottleneck, then the evenest split under it, against brute force;
// partitionUniform's counts when the ends cost nothing; the head's weight moving blocks off the last stage.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MODEL_DEFAULTS, MODEL_PRESETS } from '../../src/model/config.ts';
import { partitionBalanced } from '../../src/parallel/partition-balanced.ts';
import { partitionUniform, type LayerRange } from '../../src/parallel/partition.ts';
import { partitionForRun } from '../../src/parallel/run-partition.ts';
import { partCosts, type PartCosts } from '../../src/parallel/stage-cost.ts';

/** Layers per virtual stage (stage c P + r is chunk c of rank r). */
function countsOf(parts: LayerRange[][]): number[] {
  const pipelineSize = parts.length;
  const stages = pipelineSize * parts[0]!.length;
  return Array.from({ length: stages }, (_, stage) => {
    const [start, end] = parts[stage % pipelineSize]![Math.floor(stage / pipelineSize)]!;
    return end - start;
  });
}

function stageCosts(counts: number[], costs: PartCosts): number[] {
  return counts.map((n, stage) => n * costs.layer + (stage === 0 ? costs.embedding : 0) + (stage === counts.length - 1 ? costs.head : 0));
}

/** Every way to give each of `stages` parts at least one of `layers` layers. */
function* compositions(layers: number, stages: number): Generator<number[]> {
  if (stages === 1) {
    yield [layers];
    return;
  }
  for (let first = 1; first <= layers - (stages - 1); first++) for (const rest of compositions(layers - first, stages - 1)) yield [first, ...rest];
}

describe('partitionBalanced', () => {
  test('with free embedding and head it gives partitionUniform\'s counts (one chunk)', () => {
    for (let layers = 1; layers <= 13; layers++) {
      for (let pipeline = 1; pipeline <= layers && pipeline <= 6; pipeline++) {
        assert.deepEqual(partitionBalanced(layers, pipeline, 1, { embedding: 0, layer: 1, head: 0 }), partitionUniform(layers, pipeline), `${layers} layers over ${pipeline}`);
      }
    }
  });

  test('matches brute force: the smallest bottleneck, then the smallest sum of squares', () => {
    const cases: Array<[number, number, number, PartCosts]> = [];
    for (const head of [0, 0.5, 1, 2.5, 4, 9]) for (const embedding of [0, 0.7, 3]) for (const [layers, pipeline, chunks] of [[6, 2, 1], [7, 3, 1], [8, 2, 2], [9, 4, 1], [10, 2, 2]] as const) cases.push([layers, pipeline, chunks, { embedding, layer: 1, head }]);
    for (const [layers, pipeline, chunks, costs] of cases) {
      const stages = pipeline * chunks;
      let bestMax = Infinity;
      let bestSquares = Infinity;
      for (const counts of compositions(layers, stages)) {
        const each = stageCosts(counts, costs);
        const max = Math.max(...each);
        const squares = each.reduce((sum, c) => sum + c * c, 0);
        if (max < bestMax - 1e-9 || (Math.abs(max - bestMax) <= 1e-9 && squares < bestSquares - 1e-9)) [bestMax, bestSquares] = [max, squares];
      }
      const got = stageCosts(countsOf(partitionBalanced(layers, pipeline, chunks, costs)), costs);
      const label = `${layers} layers, pp ${pipeline} x ${chunks} chunks, ${JSON.stringify(costs)}`;
      assert.ok(Math.abs(Math.max(...got) - bestMax) <= 1e-9, `${label}: bottleneck ${Math.max(...got)} vs ${bestMax}`);
      assert.ok(Math.abs(got.reduce((sum, c) => sum + c * c, 0) - bestSquares) <= 1e-9, `${label}: not the evenest split`);
    }
  });

  test('ranges are consecutive, cover every layer once and give each virtual stage a layer', () => {
    const parts = partitionBalanced(16, 4, 2, { embedding: 2, layer: 1, head: 5 });
    const ordered = Array.from({ length: 8 }, (_, stage) => parts[stage % 4]![Math.floor(stage / 4)]!);
    assert.equal(ordered[0]![0], 0);
    assert.equal(ordered[7]![1], 16);
    for (let stage = 1; stage < 8; stage++) assert.equal(ordered[stage]![0], ordered[stage - 1]![1]);
    for (const [start, end] of ordered) assert.ok(end > start);
  });

  test('a head worth four blocks moves blocks to the first stage', () => {
    assert.deepEqual(partitionBalanced(8, 2, 1, { embedding: 0, layer: 1, head: 4 }), [[[0, 6]], [[6, 8]]]);
  });

  test('refuses fewer layers than virtual stages', () => {
    assert.throws(() => partitionBalanced(3, 2, 2, { embedding: 0, layer: 1, head: 0 }), /cannot split 3 layers over 2 pipeline stages x 2 chunks/);
  });
});

describe('partitionForRun', () => {
  const run = (partition: 'uniform' | 'balanced', numLayers: number, pipeline: number) => ({
    model: { ...MODEL_DEFAULTS, ...MODEL_PRESETS.tiny!, numLayers },
    numChunks: 1,
    partition,
    seqLen: 64,
    batchSize: 8,
    numMicroBatches: 4,
    parallel: { pipeline },
  });

  test('uniform is ColossalAI\'s split; balanced gives the tiny model\'s LM-head stage fewer blocks', () => {
    assert.deepEqual(partitionForRun(run('uniform', 8, 2)), partitionUniform(8, 2));
    const [first, last] = partitionForRun(run('balanced', 8, 2));
    assert.ok(first![0]![1] > 4, `stage 0 holds ${JSON.stringify(first)}`);
    assert.equal(last![0]![1], 8);
  });

  test('the cost model: a GPT-2-sized head costs several blocks, and everything is positive', () => {
    const costs = partCosts({ model: { ...MODEL_DEFAULTS }, seqLen: 1024, microBatchSize: 1, numMicroBatches: 8 });
    for (const value of Object.values(costs)) assert.ok(value > 0);
    assert.ok(costs.head > 3 * costs.layer && costs.head < 12 * costs.layer, `head ${costs.head / costs.layer} blocks`);
    assert.ok(costs.embedding < costs.layer, `embedding ${costs.embedding / costs.layer} blocks`);
  });
});

test('partition for a run - zbv hands the same cut to the V: stage 0 holds the first and the last part, the last stage the two middle ones', () => {
  const base = { model: { numLayers: 8 } as never, numChunks: 2, partition: 'uniform' as const, seqLen: 8, batchSize: 8, numMicroBatches: 4, parallel: { pipeline: 4 } };
  assert.deepEqual(partitionForRun(base), [[[0, 1], [4, 5]], [[1, 2], [5, 6]], [[2, 3], [6, 7]], [[3, 4], [7, 8]]]);
  assert.deepEqual(partitionForRun({ ...base, schedule: 'zbv' }), [[[0, 1], [7, 8]], [[1, 2], [6, 7]], [[2, 3], [5, 6]], [[3, 4], [4, 5]]]);
});

// Tests: loading a checkpoint into another layout (src/checkpoint/reshard.ts), exact values from region arithmetic.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadCheckpoint } from '../../src/checkpoint/checkpoint.ts';
import { CheckpointError } from '../../src/checkpoint/errors.ts';
import { assembleRegion, checkpointHolds, intersectRegions, optimizerStepOf, planRegionReads, readRegion } from '../../src/checkpoint/reshard.ts';
import { fullModelSlice, paramsForSlice } from '../../src/model/params.ts';
import { rankParams, syntheticValues, tinyModel, withTempDir, writeSyntheticCheckpoint } from './helpers.ts';

test('reshard - region arithmetic: intersections and assembling a region from pieces of any shape', () => {
  assert.deepEqual(intersectRegions({ begin: [0, 2], size: [4, 4] }, { begin: [1, 0], size: [2, 3] }), { begin: [1, 2], size: [2, 1] });
  assert.equal(intersectRegions({ begin: [0], size: [2] }, { begin: [2], size: [2] }), undefined);
  assert.deepEqual(intersectRegions({ begin: [], size: [] }, { begin: [], size: [] }), { begin: [], size: [] });
  // A 3 x 4 tensor with values 10 * row + column, stored as a left 3 x 1 piece and a right 3 x 3 piece.
  const full = (row: number, column: number): number => 10 * row + column;
  const piece = (begin: number[], size: number[]): { region: { begin: number[]; size: number[] }; values: Float32Array } => {
    const values = new Float32Array(size[0]! * size[1]!);
    for (let r = 0; r < size[0]!; r++) for (let c = 0; c < size[1]!; c++) values[r * size[1]! + c] = full(begin[0]! + r, begin[1]! + c);
    return { region: { begin, size }, values };
  };
  const pieces = [piece([0, 0], [3, 1]), piece([0, 1], [3, 3])];
  assert.deepEqual([...assembleRegion({ begin: [1, 0], size: [2, 3] }, pieces)], [10, 11, 12, 20, 21, 22]);
  assert.deepEqual([...assembleRegion({ begin: [0, 0], size: [3, 4] }, pieces)], [0, 1, 2, 3, 10, 11, 12, 13, 20, 21, 22, 23]);
  assert.deepEqual([...assembleRegion({ begin: [], size: [] }, [{ region: { begin: [], size: [] }, values: Float32Array.from([5]) }])], [5]);
});

test('reshard - a tp 2 x pp 2 checkpoint (column, row and vocab splits) loads exactly into tp 1, tp 4 and pp 4 layouts', async () => {
  await withTempDir(async (root) => {
    const seed = 3;
    const { dir } = await writeSyntheticCheckpoint(root, 5, { data: 2, pipeline: 2, tensor: 2 }, { seed });
    const checkpoint = await loadCheckpoint(dir);
    assert.equal(optimizerStepOf(checkpoint.manifest), 5);
    for (const target of [
      { data: 1, pipeline: 1, tensor: 1 },
      { data: 1, pipeline: 1, tensor: 4 },
      { data: 3, pipeline: 4, tensor: 4 },
      { data: 1, pipeline: 2, tensor: 2 },
    ]) {
      const { params } = rankParams(tinyModel, target);
      let checked = 0;
      for (const held of params) {
        for (const { spec, region } of held) {
          for (const which of ['param', 'm', 'v'] as const) {
            const name = which === 'param' ? spec.name : `${which}.${spec.name}`;
            const values = await readRegion(checkpoint, { name, fullShape: spec.shape, region });
            assert.deepEqual(values, syntheticValues(spec, which, seed, region), `${name} region [${region.begin}]+[${region.size}] in ${JSON.stringify(target)}`);
            checked++;
          }
        }
      }
      assert.ok(checked > 100, `only ${checked} tensors checked for ${JSON.stringify(target)}`);
    }
  });
});

test('reshard - reads plan the fewest files: one for a contained region, one per distinct tp shard, data-parallel replicas read once', async () => {
  await withTempDir(async (root) => {
    const { manifest } = await writeSyntheticCheckpoint(root, 1, { data: 2, pipeline: 2, tensor: 2 });
    const specs = paramsForSlice(tinyModel, fullModelSlice(tinyModel));
    const spec = (name: string) => specs.find((s) => s.name === name)!;
    // Grid order tp-dp-pp: ranks 0,1 = tp 0,1 of dp 0 stage 0; 2,3 = dp 1 stage 0; 4..7 stage 1.
    const qkv = spec('blocks.0.attn.qkv.weight'); // [12, 36], column split: rank 0 holds columns 0..17
    assert.deepEqual(planRegionReads(manifest, { name: qkv.name, fullShape: qkv.shape }), [
      { rank: 0, region: { begin: [0, 0], size: [12, 18] } },
      { rank: 1, region: { begin: [0, 18], size: [12, 18] } },
    ]);
    assert.deepEqual(planRegionReads(manifest, { name: qkv.name, fullShape: qkv.shape, region: { begin: [0, 27], size: [12, 9] } }), [
      { rank: 1, region: { begin: [0, 18], size: [12, 18] } },
    ]);
    const fc2 = spec('blocks.3.mlp.fc2.weight'); // [48, 12], row split, on stage 1
    assert.deepEqual(
      planRegionReads(manifest, { name: fc2.name, fullShape: fc2.shape }).map((r) => r.rank),
      [4, 5],
    );
    // The tied word embedding lives on stage 0 and stage 1: the lowest ranks' copies are read.
    const embedding = spec('embedding.wordEmbeddings');
    assert.deepEqual(planRegionReads(manifest, { name: embedding.name, fullShape: embedding.shape }).map((r) => r.rank), [0, 1]);
    assert.equal(checkpointHolds(manifest, 'm.norm.gamma'), true);
    assert.equal(checkpointHolds(manifest, 'm.no.such'), false);
  });
});

test('reshard - another model or an uncovered region is refused with the reason', async () => {
  await withTempDir(async (root) => {
    const { manifest, dir } = await writeSyntheticCheckpoint(root, 1, { data: 1, pipeline: 1, tensor: 2 });
    const refuse = (target: Parameters<typeof planRegionReads>[1], pattern: RegExp): void => {
      assert.throws(
        () => planRegionReads(manifest, target, dir),
        (error: unknown) => error instanceof CheckpointError && error.problem !== 'format' && pattern.test(error.message),
      );
    };
    refuse({ name: 'blocks.0.mlp.fc1.weight', fullShape: [12, 96] }, /has full shape \[12,48\] in the checkpoint \(rank 0\) but \[12,96\] in the model being loaded: the model config differs/);
    refuse({ name: 'blocks.9.mlp.fc1.weight', fullShape: [12, 48] }, /no rank file holds blocks\.9\.mlp\.fc1\.weight/);
    refuse({ name: 'norm.gamma', fullShape: [12], region: { begin: [10], size: [4] } }, /requested region of norm\.gamma: .* runs outside full shape \[12\]/);
    const partial = structuredClone(manifest);
    partial.ranks[1]!.tensors = partial.ranks[1]!.tensors.filter((t) => t.name !== 'blocks.0.mlp.fc1.weight');
    assert.throws(
      () => planRegionReads(partial, { name: 'blocks.0.mlp.fc1.weight', fullShape: [12, 48] }, dir),
      /leave 288 elements of region \[0,0\]\+\[12,48\] uncovered/,
    );
  });
});

test('reshard - unusual saved regions: a containing region wins, overlapping pieces are counted without double-counting', () => {
  const manifestWith = (...regions: { begin: number[]; size: number[] }[]) =>
    ({
      ranks: regions.map((region, rank) => ({ rank, tensors: [{ name: 'w', dtype: 'F32', fullShape: [2, 36], region }] })),
    }) as unknown as Parameters<typeof planRegionReads>[0];
  const left = { begin: [0, 0], size: [2, 18] };
  const whole = { begin: [0, 0], size: [2, 36] };
  const target = { name: 'w', fullShape: [2, 36], region: { begin: [0, 10], size: [2, 20] } };
  assert.deepEqual(planRegionReads(manifestWith(left, whole), target), [{ rank: 1, region: whole }]);
  const overlapping = { begin: [0, 10], size: [2, 26] };
  assert.deepEqual(planRegionReads(manifestWith(left, overlapping), { name: 'w', fullShape: [2, 36] }).map((r) => r.rank), [0, 1]);
  const short = { begin: [0, 12], size: [2, 20] };
  assert.throws(() => planRegionReads(manifestWith(left, short), { name: 'w', fullShape: [2, 36] }), /leave 8 elements of region \[0,0\]\+\[2,36\] uncovered/);
  const values = (region: { begin: number[]; size: number[] }) => {
    const out = new Float32Array(region.size[0]! * region.size[1]!);
    for (let r = 0; r < region.size[0]!; r++) for (let c = 0; c < region.size[1]!; c++) out[r * region.size[1]! + c] = 100 * r + region.begin[1]! + c;
    return out;
  };
  const assembled = assembleRegion(whole, [left, overlapping].map((region) => ({ region, values: values(region) })));
  assert.deepEqual(assembled, values(whole));
});

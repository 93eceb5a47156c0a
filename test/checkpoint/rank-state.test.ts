// Tests: saving a rank's parameters and Adam moments from its parameter table and loading them into any layout (src/checkpoint/rank-state.ts).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { beginCheckpoint, commitCheckpoint, loadCheckpoint, writeRankShard } from '../../src/checkpoint/checkpoint.ts';
import { dataLoaderPosition, loadRankState, rankTensorsToSave, type RankState } from '../../src/checkpoint/rank-state.ts';
import { rankParams, syntheticValues, tinyModel, withTempDir, type SyntheticLayout } from './helpers.ts';

async function saveLayout(root: string, layout: SyntheticLayout, optimizerStep: number): Promise<string> {
  const { grid, params } = rankParams(tinyModel, layout);
  const dir = await beginCheckpoint(root, optimizerStep);
  const records = [];
  for (let rank = 0; rank < grid.world; rank++) {
    const state: RankState = { params: new Map(), moments: new Map(), optimizerStep };
    for (const { spec, region } of params[rank]!) {
      state.params.set(spec.name, syntheticValues(spec, 'param', 1, region));
      if (optimizerStep > 0) state.moments.set(spec.name, { m: syntheticValues(spec, 'm', 1, region), v: syntheticValues(spec, 'v', 1, region) });
    }
    records.push(await writeRankShard(dir, rank, rankTensorsToSave(params[rank]!, state), { step: optimizerStep, optimizerStep }));
  }
  const committed = await commitCheckpoint(root, optimizerStep, dir, {
    layout: { ...grid.toJSON(), world: grid.world },
    seed: 1,
    dataLoader: dataLoaderPosition(optimizerStep, 4),
    config: null,
    ranks: records,
  });
  return committed.dir;
}

test('rank state - a (1,2,2) checkpoint restores every rank of (1,2,2), (1,1,1) and (2,1,1) with parameters, moments and the Adam step', async () => {
  await withTempDir(async (root) => {
    const checkpoint = await loadCheckpoint(await saveLayout(root, { data: 1, pipeline: 2, tensor: 2 }, 6));
    assert.deepEqual(checkpoint.manifest.dataLoader, { nextStep: 6, epoch: 1, stepInEpoch: 2 });
    for (const layout of [{ data: 1, pipeline: 2, tensor: 2 }, { data: 1, pipeline: 1, tensor: 1 }, { data: 2, pipeline: 1, tensor: 1 }]) {
      const { params } = rankParams(tinyModel, layout);
      for (const held of params) {
        const state = await loadRankState(checkpoint, held);
        assert.equal(state.optimizerStep, 6);
        assert.equal(state.params.size, held.length);
        for (const { spec, region } of held) {
          assert.deepEqual(state.params.get(spec.name), syntheticValues(spec, 'param', 1, region), spec.name);
          assert.deepEqual(state.moments.get(spec.name)?.m, syntheticValues(spec, 'm', 1, region));
          assert.deepEqual(state.moments.get(spec.name)?.v, syntheticValues(spec, 'v', 1, region));
        }
      }
    }
  });
});

test('rank state - a checkpoint before the first step has no moments; missing values or moments are refused', async () => {
  await withTempDir(async (root) => {
    const checkpoint = await loadCheckpoint(await saveLayout(root, { data: 1, pipeline: 1, tensor: 2 }, 0));
    const { params } = rankParams(tinyModel, { data: 1, pipeline: 1, tensor: 1 });
    const state = await loadRankState(checkpoint, params[0]!);
    assert.equal(state.optimizerStep, 0);
    assert.equal(state.moments.size, 0);
    assert.equal(state.params.size, params[0]!.length);
    const empty: RankState = { params: new Map(), moments: new Map(), optimizerStep: 3 };
    assert.throws(() => rankTensorsToSave(params[0]!, empty), /no values for parameter embedding\.wordEmbeddings, which this rank holds/);
    const noMoments: RankState = { ...empty, params: state.params };
    assert.throws(() => rankTensorsToSave(params[0]!, noMoments), /no Adam moments for embedding\.wordEmbeddings after 3 optimizer steps/);
  });
});

/** Test helpers: temporary directories and synthetic checkpoints of a tiny GPT in any (dp, pp, tp) layout. */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { GPTConfig } from '../../src/model/config.ts';
import { MODEL_DEFAULTS } from '../../src/model/config.ts';
import { initialValues, type ParamSpec } from '../../src/model/params.ts';
import { paramsForRank, type ShardedParam } from '../../src/model/sharding.ts';
import { ParallelGrid } from '../../src/parallel/grid.ts';
import { partitionUniform } from '../../src/parallel/partition.ts';
import {
  beginCheckpoint,
  commitCheckpoint,
  firstMomentName,
  secondMomentName,
  writeRankShard,
  type CommitOptions,
  type RankTensor,
} from '../../src/checkpoint/checkpoint.ts';
import type { CheckpointManifest } from '../../src/checkpoint/manifest.ts';
import { CheckpointError, type CheckpointProblem } from '../../src/checkpoint/errors.ts';

/** 4 heads, MLP 48 wide, vocab 36, 4 layers: splits over tp 1, 2, 4 and pp 1, 2, 4. */
export const tinyModel: GPTConfig = {
  ...MODEL_DEFAULTS,
  numLayers: 4,
  hiddenSize: 12,
  numAttentionHeads: 4,
  vocabSize: 36,
  maxPositionEmbeddings: 8,
};

export async function withTempDir<T>(body: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'gpt-hybrid-checkpoint-'));
  try {
    return await body(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export interface SyntheticLayout {
  data: number;
  pipeline: number;
  tensor: number;
}

/** The parameters each rank of a layout holds, by rank. */
export function rankParams(config: GPTConfig, layout: SyntheticLayout): { grid: ParallelGrid; params: ShardedParam[][] } {
  const grid = new ParallelGrid(layout);
  const stages = partitionUniform(config.numLayers, layout.pipeline);
  const params = Array.from({ length: grid.world }, (_, rank) => {
    const { pp, tp } = grid.coordinates(rank);
    return paramsForRank(config, { layerRanges: stages[pp]!, tp: layout.tensor, tpRank: tp });
  });
  return { grid, params };
}

/** Deterministic stand-ins for a parameter's values and Adam moments: any region equals that region of the full tensor. */
export function syntheticValues(spec: ParamSpec, which: 'param' | 'm' | 'v', seed: number, region?: { begin: number[]; size: number[] }): Float32Array {
  if (which === 'param') return initialValues(spec, seed, region);
  // Moments of zero-initialized parameters must not be zero too, or a misplaced copy would go unnoticed.
  const asNormal: ParamSpec = { ...spec, name: `${which}.${spec.name}`, init: { kind: 'normal', std: 1 } };
  return initialValues(asNormal, seed, region);
}

/** Writes and commits a checkpoint of `config` in `layout` as the ranks and coordinator would. */
export async function writeSyntheticCheckpoint(
  root: string,
  step: number,
  layout: SyntheticLayout,
  options: { config?: GPTConfig; seed?: number; commit?: CommitOptions } = {},
): Promise<{ dir: string; manifest: CheckpointManifest }> {
  const config = options.config ?? tinyModel;
  const seed = options.seed ?? 7;
  const { grid, params } = rankParams(config, layout);
  const temporaryDir = await beginCheckpoint(root, step);
  const records = [];
  for (let rank = 0; rank < grid.world; rank++) {
    const tensors = new Map<string, RankTensor>();
    for (const { spec, region } of params[rank]!) {
      tensors.set(spec.name, { values: syntheticValues(spec, 'param', seed, region), region, fullShape: spec.shape });
      tensors.set(firstMomentName(spec.name), { values: syntheticValues(spec, 'm', seed, region), region, fullShape: spec.shape });
      tensors.set(secondMomentName(spec.name), { values: syntheticValues(spec, 'v', seed, region), region, fullShape: spec.shape });
    }
    records.push(await writeRankShard(temporaryDir, rank, tensors, { step, optimizerStep: step }));
  }
  return commitCheckpoint(
    root,
    step,
    temporaryDir,
    {
      layout: { ...grid.toJSON(), world: grid.world },
      seed,
      dataLoader: { nextStep: step, epoch: 0, stepInEpoch: step },
      rng: { kind: 'counter', seed },
      config: { model: { ...config } },
      ranks: records,
    },
    options.commit,
  );
}

/** Asserts that `promise` rejects with a CheckpointError of kind `problem` whose message matches `pattern`. */
export async function assertRefused(promise: Promise<unknown>, problem: CheckpointProblem, pattern: RegExp): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof CheckpointError, `expected a CheckpointError, got ${String(error)}`);
    assert.equal(error.problem, problem, error.message);
    assert.match(error.message, pattern);
    return true;
  });
}

/**
 * Implements: the manifest of a run's checkpoint apart from its rank files: layout, seed, data-loader
 * position and the resolved config. Every writer of checkpoints (a training run, `checkpoint import`)
 * describes its run with it.
 */
import type { TrainConfig } from '../config/types.ts';
import type { ManifestParts } from './checkpoint.ts';
import type { JsonValue, RankFileRecord } from './manifest.ts';
import { dataLoaderPosition } from './rank-state.ts';

/** The manifest's description of a run: everything but the rank files; `runId` (run-id.ts) names the run. */
export function manifestParts(config: TrainConfig, world: number, completedSteps: number, stepsPerEpoch: number, ranks: RankFileRecord[], runId?: string): ManifestParts {
  return {
    layout: { data: config.parallel.data, pipeline: config.parallel.pipeline, tensor: config.parallel.tensor.size, order: 'tp-dp-pp', world },
    seed: config.seed,
    dataLoader: dataLoaderPosition(completedSteps, stepsPerEpoch),
    rng: { kind: 'counter', seed: config.seed },
    config: JSON.parse(JSON.stringify(config)) as JsonValue,
    ranks,
    ...(runId === undefined ? {} : { extra: { runId } }),
  };
}


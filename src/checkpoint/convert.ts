/**
 * Implements: converting a checkpoint to another parallel layout offline (`gpt-hybrid checkpoint convert`):
 * every rank of the target layout gets the file it would have written itself (its parameter shards and Adam
 * moments, assembled from the source by global name and region, reshard.ts), under a new manifest committed
 * with the same protocol as a training run's (temporary directory, fsync, rename, `latest` last).
 *
 * Resuming a converted checkpoint loads exactly the values load-time resharding of the source would, so the
 * losses are the same; what conversion adds is a checkpoint whose files match the new layout one to one.
 * The output is a run folder (`OUT/checkpoints/step-NNNNNN`, `OUT/checkpoints/latest`), never an existing,
 * non-empty one: nothing is overwritten, and a failed conversion leaves nothing behind.
 */
import { mkdir, rm } from 'node:fs/promises';
import { join, relative, resolve } from 'node:path';
import { MODEL_DEFAULTS, type GPTConfig } from '../model/config.ts';
import { paramsForRank, tensorParallelProblems } from '../model/sharding.ts';
import { DEFAULT_GRID_ORDER, ParallelGrid } from '../parallel/grid.ts';
import { partitionForRun } from '../parallel/run-partition.ts';
import { RUN_CHECKPOINTS_DIR, beginCheckpoint, commitCheckpoint, loadCheckpoint, resolveCheckpoint, writeRankShard } from './checkpoint.ts';
import { CheckpointError } from './errors.ts';
import { refuseNonEmptyFolder } from './new-folder.ts';
import { MANIFEST_FILE, type CheckpointManifest, type JsonValue, type RankFileRecord } from './manifest.ts';
import { loadRankState, rankTensorsToSave } from './rank-state.ts';

/** The layout to convert to; what is left out keeps the source's value (numChunks: 1 when the pipeline changes). */
export interface TargetLayout {
  data?: number;
  pipeline?: number;
  tensor?: number;
  /** Model chunks per pipeline stage (interleaved 1F1B): which layers each stage's file holds. */
  numChunks?: number;
}

export interface ConvertOptions {
  /** The model; default: the source manifest's config.model. */
  model?: GPTConfig;
}

export interface ConvertResult {
  /** The checkpoint the source path resolved to. */
  sourceDir: string;
  source: CheckpointManifest;
  /** The new checkpoint directory. */
  dir: string;
  manifest: CheckpointManifest;
  numChunks: number;
}

type JsonObject = { [key: string]: JsonValue };

function isObject(value: JsonValue | undefined): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Writes the checkpoint at `source` (a checkpoint, or a run folder meaning its latest) into the run folder
 * `out` in layout `target`. Throws CheckpointError naming the problem: a missing, damaged or incomplete
 * source, a layout the model cannot take, an existing non-empty `out`.
 */
export async function convertCheckpoint(source: string, out: string, target: TargetLayout, options: ConvertOptions = {}): Promise<ConvertResult> {
  const existed = await refuseNonEmptyFolder(out, 'convert');
  const sourceDir = await resolveCheckpoint(source);
  if (!relative(resolve(sourceDir), resolve(out)).startsWith('..')) {
    throw new CheckpointError('invalid-argument', out, `is inside the source checkpoint ${sourceDir}; write the converted checkpoint somewhere else`);
  }
  // Every source file is read and checked here, including data-parallel copies no target rank reads.
  const checkpoint = await loadCheckpoint(sourceDir, { verify: true });
  try {
    const sourceManifest = checkpoint.manifest;
    const model = options.model ?? modelOf(sourceManifest, sourceDir);
    const layout = targetLayout(sourceManifest, target);
    const stages = checkLayout(model, layout, sourceManifest.config, out);
    const grid = new ParallelGrid({ data: layout.data, pipeline: layout.pipeline, tensor: layout.tensor, order: DEFAULT_GRID_ORDER });

    const root = join(out, RUN_CHECKPOINTS_DIR);
    try {
      await mkdir(out, { recursive: true });
      const step = sourceManifest.step;
      const temporary = await beginCheckpoint(root, step);
      const records: RankFileRecord[] = [];
      // Data-parallel replicas hold the same tensors: assemble each (stage, shard) once, write it per replica.
      for (let pp = 0; pp < grid.pipeline; pp++) {
        for (let tp = 0; tp < grid.tensor; tp++) {
          const held = paramsForRank(model, { layerRanges: stages[pp]!, tp: grid.tensor, tpRank: tp });
          const state = await loadRankState(checkpoint, held);
          const tensors = rankTensorsToSave(held, state);
          for (let dp = 0; dp < grid.data; dp++) {
            const rank = grid.rankOf({ dp, pp, tp });
            records.push(await writeRankShard(temporary, rank, tensors, { step, optimizerStep: state.optimizerStep }));
          }
        }
      }
      const { dir, manifest } = await commitCheckpoint(root, step, temporary, {
        layout: { ...grid.toJSON(), world: grid.world },
        seed: sourceManifest.seed,
        dataLoader: sourceManifest.dataLoader,
        rng: sourceManifest.rng,
        config: convertedConfig(sourceManifest.config, layout),
        ranks: records,
        extra: { ...sourceManifest.extra, convertedFrom: { layout: { ...sourceManifest.layout }, createdAt: sourceManifest.createdAt } },
      });
      return { sourceDir, source: sourceManifest, dir, manifest, numChunks: layout.numChunks };
    } catch (error) {
      // Only what this conversion made goes: the checkpoints folder of an empty `out` given, else `out` itself.
      await rm(existed ? root : out, { recursive: true, force: true });
      throw error;
    }
  } finally {
    checkpoint.close();
  }
}

/** The model the checkpoint is of, from its manifest's config (shapes are then checked against every tensor record). */
function modelOf(manifest: CheckpointManifest, dir: string): GPTConfig {
  const model = isObject(manifest.config) ? manifest.config.model : undefined;
  const fields = ['numLayers', 'hiddenSize', 'numAttentionHeads', 'vocabSize', 'maxPositionEmbeddings', 'mlpRatio'] as const;
  const bad = isObject(model) ? fields.filter((key) => !(typeof model[key] === 'number' && Number.isSafeInteger(model[key]) && (model[key] as number) > 0)) : fields;
  if (bad.length > 0) {
    throw new CheckpointError(
      'manifest',
      join(dir, MANIFEST_FILE),
      `config.model lacks positive integers for ${bad.join(', ')}, so which parameters each rank holds cannot be worked out; the checkpoint is damaged or not one of ours`,
    );
  }
  const given = model as JsonObject;
  return { ...MODEL_DEFAULTS, ...Object.fromEntries(fields.map((key) => [key, given[key] as number])) };
}

function targetLayout(source: CheckpointManifest, target: TargetLayout): Required<TargetLayout> {
  const pipeline = target.pipeline ?? source.layout.pipeline;
  const parallelConfig = isObject(source.config) ? source.config : {};
  const sourceChunks = typeof parallelConfig.numChunks === 'number' ? parallelConfig.numChunks : 1;
  return {
    data: target.data ?? source.layout.data,
    pipeline,
    tensor: target.tensor ?? source.layout.tensor,
    numChunks: target.numChunks ?? (pipeline === source.layout.pipeline ? sourceChunks : 1),
  };
}

/** Every reason `model` cannot take `layout`, at once; else each stage's layer ranges. */
function checkLayout(model: GPTConfig, layout: Required<TargetLayout>, sourceConfig: JsonValue, out: string): [number, number][][] {
  const problems: string[] = [];
  for (const key of ['data', 'pipeline', 'tensor', 'numChunks'] as const) {
    if (!(Number.isSafeInteger(layout[key]) && layout[key] >= 1)) problems.push(`${key} must be a positive integer, got ${layout[key]}`);
  }
  let stages: [number, number][][] = [];
  if (problems.length === 0) {
    problems.push(...tensorParallelProblems(model, layout.tensor));
    try {
      stages = partitionForRun({ ...partitionSettings(sourceConfig), model, numChunks: layout.numChunks, parallel: { pipeline: layout.pipeline } });
    } catch (error) {
      problems.push((error as Error).message);
    }
  }
  if (problems.length > 0) {
    const chunks = layout.numChunks === 1 ? '' : ` (${layout.numChunks} chunks per stage)`;
    throw new CheckpointError('layout', out, `cannot convert to data ${layout.data} x pipeline ${layout.pipeline} x tensor ${layout.tensor}${chunks}: ${problems.join('; ')}`);
  }
  return stages;
}

/**
 * How the source run split layers over stages, so a converted file holds what that run's rank would
 * (resuming reshards by global name either way; this only spares it the work). Missing or odd values
 * fall back to the defaults: only the split, not the numbers, depends on them.
 */
function partitionSettings(config: JsonValue): { partition: 'uniform' | 'balanced'; seqLen: number; batchSize: number; numMicroBatches: number } {
  const given = isObject(config) ? config : {};
  const positive = (value: JsonValue | undefined, fallback: number): number => (typeof value === 'number' && Number.isSafeInteger(value) && value > 0 ? value : fallback);
  const numMicroBatches = positive(given.numMicroBatches, 1);
  return {
    partition: given.partition === 'balanced' ? 'balanced' : 'uniform',
    seqLen: positive(given.seqLen, 128),
    batchSize: positive(given.batchSize, numMicroBatches),
    numMicroBatches,
  };
}

/** The source's config with the new layout written in, so the manifest describes what the files hold. */
function convertedConfig(config: JsonValue, layout: Required<TargetLayout>): JsonValue {
  if (!isObject(config)) return config;
  const copy = structuredClone(config);
  const parallel = isObject(copy.parallel) ? copy.parallel : {};
  const tensor = isObject(parallel.tensor) ? parallel.tensor : { mode: '1d' };
  copy.parallel = { ...parallel, data: layout.data, pipeline: layout.pipeline, tensor: { ...tensor, size: layout.tensor } };
  copy.numChunks = layout.numChunks;
  return copy;
}

/**
 * Implements: manifest.json of a checkpoint directory, its types and the check that turns untrusted JSON into
 * a CheckpointManifest or a CheckpointError naming the field. The manifest is what makes a checkpoint
 * portable: every rank file's size and SHA-256, and for every tensor its global name, full shape and the
 * region of the full tensor the file holds, so any other layout can assemble its own regions (reshard.ts).
 *
 * Version history: 1, the first.
 */
import { ParallelGrid } from '../parallel/grid.ts';
import { CheckpointError } from './errors.ts';

export const CHECKPOINT_FORMAT = 'gpt-hybrid-checkpoint';
export const CHECKPOINT_VERSION = 1;
export const MANIFEST_FILE = 'manifest.json';

/** JSON values, for the parts of the manifest this module carries without interpreting. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** The parallel layout the checkpoint was written in (ParallelGrid.toJSON() plus the world size). */
export interface CheckpointLayout {
  data: number;
  pipeline: number;
  tensor: number;
  order: string;
  world: number;
}

/**
 * Where the data loader resumes. The sampler (src/dataset/sampler.ts) is a pure function of (seed, step), so
 * `nextStep` alone restores it; `epoch` and `stepInEpoch` are there for people and for a cross-check.
 */
export interface DataLoaderPosition {
  /** The 0-based optimizer step whose global batch comes next (= the checkpoint's step). */
  nextStep: number;
  epoch: number;
  stepInEpoch: number;
}

/** A rectangular part of a full tensor, as src/model/params.ts's Region. */
export interface TensorRegion {
  begin: number[];
  size: number[];
}

export type StoredDtype = 'F32' | 'I32';

/** One tensor of a rank file. `name` is its global name (`blocks.0.attn.qkv.weight`, `m.<param>`, `v.<param>`). */
export interface TensorRecord {
  name: string;
  dtype: StoredDtype;
  fullShape: number[];
  region: TensorRegion;
}

/** One rank's file, as writeRankShard returns it and the manifest lists it. */
export interface RankFileRecord {
  rank: number;
  /** File name inside the checkpoint directory. */
  file: string;
  bytes: number;
  sha256: string;
  /** Adam updates this rank had applied (AdamOptimizer.stepCount); the bias correction needs it. */
  optimizerStep: number;
  tensors: TensorRecord[];
}

export interface CheckpointManifest {
  format: typeof CHECKPOINT_FORMAT;
  version: number;
  /** Optimizer steps completed; resuming runs step `step + 1` (1-based) next. */
  step: number;
  seed: number;
  layout: CheckpointLayout;
  dataLoader: DataLoaderPosition;
  /** Random-number state needed to resume; opaque here (the counter-based RNG needs only seeds). */
  rng: { [key: string]: JsonValue };
  /** The resolved TrainConfig the run used. */
  config: JsonValue;
  createdAt: string;
  ranks: RankFileRecord[];
  /** Anything else the trainer wants back on resume (e.g. lines already in metrics.jsonl). */
  extra: { [key: string]: JsonValue };
}

export const RANK_FILE_PATTERN = /^rank-\d{5,}\.safetensors$/;

export function rankFileName(rank: number): string {
  return `rank-${String(rank).padStart(5, '0')}.safetensors`;
}

/** Turns parsed JSON into a manifest, or throws CheckpointError('manifest' | 'version') naming the field. */
export function checkManifest(value: unknown, source: string): CheckpointManifest {
  const fail = (path: string, detail: string): never => {
    throw new CheckpointError('manifest', source, `${path} ${detail}; the checkpoint is damaged or not one of ours`);
  };
  const object = (v: unknown, path: string): Record<string, unknown> => {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) fail(path, 'must be an object');
    return v as Record<string, unknown>;
  };
  const field = (record: Record<string, unknown>, key: string): unknown => (Object.hasOwn(record, key) ? record[key] : undefined);
  const count = (v: unknown, path: string, min = 0): number => {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) fail(path, `must be an integer >= ${min}, got ${JSON.stringify(v)}`);
    return v as number;
  };
  const string = (v: unknown, path: string): string => {
    if (typeof v !== 'string') fail(path, `must be a string, got ${JSON.stringify(v)}`);
    return v as string;
  };
  const counts = (v: unknown, path: string): number[] => {
    if (!Array.isArray(v)) fail(path, 'must be a list of integers');
    return (v as unknown[]).map((n, i) => count(n, `${path}[${i}]`));
  };

  const root = object(value, 'the manifest');
  if (field(root, 'format') !== CHECKPOINT_FORMAT) fail('format', `must be "${CHECKPOINT_FORMAT}", got ${JSON.stringify(field(root, 'format'))}`);
  const version = field(root, 'version');
  if (version !== CHECKPOINT_VERSION) {
    throw new CheckpointError(
      'version',
      source,
      `checkpoint format version ${JSON.stringify(version)} is not one this gpt-hybrid reads (it reads version ${CHECKPOINT_VERSION}); load it with the gpt-hybrid that wrote it`,
    );
  }
  const layoutObject = object(field(root, 'layout'), 'layout');
  const layout: CheckpointLayout = {
    data: count(field(layoutObject, 'data'), 'layout.data', 1),
    pipeline: count(field(layoutObject, 'pipeline'), 'layout.pipeline', 1),
    tensor: count(field(layoutObject, 'tensor'), 'layout.tensor', 1),
    order: string(field(layoutObject, 'order'), 'layout.order'),
    world: count(field(layoutObject, 'world'), 'layout.world', 1),
  };
  if (layout.world !== layout.data * layout.pipeline * layout.tensor) {
    fail('layout.world', `${layout.world} is not data x pipeline x tensor = ${layout.data * layout.pipeline * layout.tensor}`);
  }
  const loader = object(field(root, 'dataLoader'), 'dataLoader');
  const rng = object(field(root, 'rng'), 'rng');
  const extra = object(field(root, 'extra'), 'extra');
  const rankList = field(root, 'ranks');
  if (!Array.isArray(rankList)) fail('ranks', 'must be a list');
  const ranks = (rankList as unknown[]).map((item, i): RankFileRecord => {
    const path = `ranks[${i}]`;
    const record = object(item, path);
    const file = string(field(record, 'file'), `${path}.file`);
    // The name becomes a path: nothing that could leave the checkpoint directory.
    if (!RANK_FILE_PATTERN.test(file)) fail(`${path}.file`, `must look like rank-00000.safetensors, got ${JSON.stringify(file)}`);
    const sha256 = string(field(record, 'sha256'), `${path}.sha256`);
    if (!/^[0-9a-f]{64}$/.test(sha256)) fail(`${path}.sha256`, 'must be 64 lowercase hex digits');
    const tensorList = field(record, 'tensors');
    if (!Array.isArray(tensorList)) fail(`${path}.tensors`, 'must be a list');
    const tensors = (tensorList as unknown[]).map((t, j): TensorRecord => {
      const tpath = `${path}.tensors[${j}]`;
      const tensor = object(t, tpath);
      const dtype = field(tensor, 'dtype');
      if (dtype !== 'F32' && dtype !== 'I32') fail(`${tpath}.dtype`, `must be "F32" or "I32", got ${JSON.stringify(dtype)}`);
      const fullShape = counts(field(tensor, 'fullShape'), `${tpath}.fullShape`);
      const region = object(field(tensor, 'region'), `${tpath}.region`);
      const begin = counts(field(region, 'begin'), `${tpath}.region.begin`);
      const size = counts(field(region, 'size'), `${tpath}.region.size`);
      const problem = regionProblem(fullShape, { begin, size });
      if (problem !== undefined) fail(`${tpath}.region`, problem);
      return { name: string(field(tensor, 'name'), `${tpath}.name`), dtype: dtype as StoredDtype, fullShape, region: { begin, size } };
    });
    return {
      rank: count(field(record, 'rank'), `${path}.rank`),
      file,
      bytes: count(field(record, 'bytes'), `${path}.bytes`),
      sha256,
      optimizerStep: count(field(record, 'optimizerStep'), `${path}.optimizerStep`),
      tensors,
    };
  });
  const rankProblem = rankCoverageProblem(ranks, layout);
  if (rankProblem !== undefined) fail('ranks', rankProblem);
  return {
    format: CHECKPOINT_FORMAT,
    version: CHECKPOINT_VERSION,
    step: count(field(root, 'step'), 'step'),
    seed: count(field(root, 'seed'), 'seed'),
    layout,
    dataLoader: {
      nextStep: count(field(loader, 'nextStep'), 'dataLoader.nextStep'),
      epoch: count(field(loader, 'epoch'), 'dataLoader.epoch'),
      stepInEpoch: count(field(loader, 'stepInEpoch'), 'dataLoader.stepInEpoch'),
    },
    rng: rng as { [key: string]: JsonValue },
    config: (field(root, 'config') ?? null) as JsonValue,
    createdAt: string(field(root, 'createdAt'), 'createdAt'),
    ranks: ranks.sort((a, b) => a.rank - b.rank),
    extra: extra as { [key: string]: JsonValue },
  };
}

/** Why `region` is not a region of a tensor of `fullShape`, or undefined when it is. */
export function regionProblem(fullShape: readonly number[], region: TensorRegion): string | undefined {
  if (region.begin.length !== fullShape.length || region.size.length !== fullShape.length) {
    return `begin [${region.begin}] / size [${region.size}] do not have the rank of full shape [${fullShape}]`;
  }
  for (let axis = 0; axis < fullShape.length; axis++) {
    if (region.begin[axis]! + region.size[axis]! > fullShape[axis]!) {
      return `begin [${region.begin}] + size [${region.size}] runs outside full shape [${fullShape}] on axis ${axis}`;
    }
  }
  return undefined;
}

/**
 * The ranks whose files hold a checkpoint of `layout`: one copy of every shard. Data-parallel replicas
 * hold the same values, so replica 0's ranks alone write (Megatron saves one data-parallel copy too).
 */
export function writingRanks(layout: CheckpointLayout): number[] {
  const grid = new ParallelGrid({ data: layout.data, pipeline: layout.pipeline, tensor: layout.tensor, order: layout.order });
  return Array.from({ length: grid.world }, (_, rank) => rank).filter((rank) => grid.coordinates(rank).dp === 0);
}

/**
 * Why the records are not one per rank of data-parallel replica 0 (writingRanks), or one per rank of the
 * world (how checkpoints were written before, still read), or undefined.
 */
export function rankCoverageProblem(ranks: readonly { rank: number }[], layout: CheckpointLayout): string | undefined {
  const { world } = layout;
  const seen = new Set<number>();
  for (const { rank } of ranks) {
    if (!Number.isInteger(rank) || rank < 0 || rank >= world) return `rank ${rank} is outside 0..${world - 1}`;
    if (seen.has(rank)) return `rank ${rank} is listed twice`;
    seen.add(rank);
  }
  const expected = seen.size === world ? Array.from({ length: world }, (_, rank) => rank) : writingRanks(layout);
  const missing = expected.filter((rank) => !seen.has(rank)).slice(0, 8);
  if (missing.length > 0) return `no file for rank${missing.length > 1 ? 's' : ''} ${missing.join(', ')} of world ${world}${expected.length < world ? ' (data-parallel replica 0 writes)' : ''}`;
  const extra = [...seen].filter((rank) => !expected.includes(rank));
  return extra.length === 0 ? undefined : `rank ${extra[0]} is not of data-parallel replica 0, which alone writes unless every rank does`;
}

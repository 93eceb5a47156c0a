/**
 * Implements: checkpoint directories on disk: writing one rank file per rank, committing them atomically
 * under a `latest` pointer, pruning old ones, finding one from a path, and loading one with every file
 * checked against the manifest.
 *
 * On disk, under a run's checkpoint root:
 *   step-000012/manifest.json            layout, step, seed, data-loader position, RNG, config, and per rank
 *                                        file its size, SHA-256 and every tensor's global name/shape/region
 *   step-000012/rank-00003.safetensors   rank 3's parameter shards, Adam moments (m.<name>, v.<name>)
 *   latest                               "step-000012": the newest committed checkpoint
 *
 * [Note: commit protocol] Ranks write into `.step-000012.tmp-<token>/` (beginCheckpoint names it; the
 * coordinator hands the name to every rank), each file fsynced. The committer then writes manifest.json,
 * fsyncs the temporary directory, renames it to `step-000012`, fsyncs the root, and only then replaces
 * `latest` (temporary file, fsync, rename, fsync). A crash at any point leaves `latest` naming a complete
 * checkpoint; a leftover `.tmp` directory is never read and is deleted by the next commit.
 */
import { mkdir, open, readFile, readdir, rename, rm, stat } from 'node:fs/promises';
import { constants as bufferConstants } from 'node:buffer';
import { basename, dirname, join, resolve } from 'node:path';
import { CheckpointError } from './errors.ts';
import { replaceFileAtomically, sha256Hex, syncDirectory, writeFileDurably } from './durable-fs.ts';
import {
  CHECKPOINT_FORMAT,
  CHECKPOINT_VERSION,
  MANIFEST_FILE,
  checkManifest,
  rankCoverageProblem,
  rankFileName,
  regionProblem,
  type CheckpointLayout,
  type CheckpointManifest,
  type DataLoaderPosition,
  type JsonValue,
  type RankFileRecord,
  type TensorRecord,
  type TensorRegion,
} from './manifest.ts';
import { parseSafetensors, serializeSafetensors, type SafetensorsFile, type TensorToWrite } from './safetensors.ts';

export const LATEST_FILE = 'latest';
/** Where a run keeps its checkpoints, under its --out folder. */
export const RUN_CHECKPOINTS_DIR = 'checkpoints';
/** A committed checkpoint's folder under the checkpoints root: `step-NNNNNN`. */
export const STEP_DIR_PATTERN = /^step-(\d+)$/;
const TEMPORARY_DIR_PATTERN = /^\.step-\d+\.(tmp|replaced|pruned)-/;

/** Names of the Adam moments of parameter `name` in a rank file. */
export function firstMomentName(name: string): string {
  return `m.${name}`;
}
export function secondMomentName(name: string): string {
  return `v.${name}`;
}

export function stepDirName(step: number): string {
  if (!Number.isSafeInteger(step) || step < 0) throw new CheckpointError('invalid-argument', 'checkpoint', `step ${step} must be a non-negative integer`);
  return `step-${String(step).padStart(6, '0')}`;
}

/** One tensor a rank saves. Without `region`, `values` is the whole tensor of shape `shape`. */
export interface RankTensor {
  values: Float32Array | Int32Array;
  /** The shape of `values`; defaults to region.size, or fullShape. */
  shape?: readonly number[];
  /** The full (unsharded) shape; required with `region`. */
  fullShape?: readonly number[];
  /** The part of the full tensor `values` holds (a tp shard: shardRegion in src/model/sharding.ts). */
  region?: TensorRegion;
}

export interface RankShardMeta {
  /** Optimizer steps completed (the checkpoint's step). */
  step: number;
  /** AdamOptimizer.stepCount of this rank. */
  optimizerStep: number;
}

/**
 * The directory ranks write into for checkpoint `step`, created empty (a stale one of the same name is
 * replaced). `token` must be the same for every rank: the coordinator calls this and sends the path.
 */
export async function beginCheckpoint(root: string, step: number, token: string = String(process.pid)): Promise<string> {
  if (!/^[A-Za-z0-9_-]+$/.test(token)) throw new CheckpointError('invalid-argument', root, `checkpoint token ${JSON.stringify(token)} must be [A-Za-z0-9_-]+`);
  const dir = join(root, `.${stepDirName(step)}.tmp-${token}`);
  await mkdir(root, { recursive: true });
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir);
  return dir;
}

/**
 * Writes rank `rank`'s file into `temporaryDir` (fsynced) and returns the record the committer needs (send
 * it to the coordinator; it is small JSON). Tensors are written in the map's order.
 */
export async function writeRankShard(
  temporaryDir: string,
  rank: number,
  tensors: ReadonlyMap<string, RankTensor>,
  meta: RankShardMeta,
): Promise<RankFileRecord> {
  const file = rankFileName(rank);
  const path = join(temporaryDir, file);
  if (!Number.isSafeInteger(rank) || rank < 0) throw new CheckpointError('invalid-argument', path, `rank ${rank} must be a non-negative integer`);
  const toWrite = new Map<string, TensorToWrite>();
  const records: TensorRecord[] = [];
  for (const [name, tensor] of tensors) {
    const record = tensorRecord(path, name, tensor);
    records.push(record);
    toWrite.set(name, { dtype: record.dtype, shape: record.region.size, data: tensor.values });
  }
  const metadata = {
    format: CHECKPOINT_FORMAT,
    rank: String(rank),
    step: String(meta.step),
    optimizerStep: String(meta.optimizerStep),
  };
  const written = await writeFileDurably(path, serializeSafetensors(toWrite, metadata, path));
  return { rank, file, bytes: written.bytes, sha256: written.sha256, optimizerStep: meta.optimizerStep, tensors: records };
}

function tensorRecord(path: string, name: string, tensor: RankTensor): TensorRecord {
  const fail = (detail: string): never => {
    throw new CheckpointError('invalid-argument', path, `tensor ${name}: ${detail}`);
  };
  const dtype = tensor.values instanceof Float32Array ? 'F32' : tensor.values instanceof Int32Array ? 'I32' : fail('values must be a Float32Array or Int32Array');
  if (tensor.region !== undefined && tensor.fullShape === undefined) fail('a region needs the fullShape it is a region of');
  const shape = [...(tensor.shape ?? tensor.region?.size ?? tensor.fullShape ?? fail('give its shape'))];
  const fullShape = [...(tensor.fullShape ?? shape)];
  const region = tensor.region === undefined ? { begin: fullShape.map(() => 0), size: fullShape.slice() } : { begin: [...tensor.region.begin], size: [...tensor.region.size] };
  if (![...shape, ...fullShape, ...region.begin].every((n) => Number.isSafeInteger(n) && n >= 0)) fail('shapes and regions must hold non-negative integers');
  const problem = regionProblem(fullShape, region);
  if (problem !== undefined) fail(problem);
  if (shape.join() !== region.size.join()) fail(`shape [${shape}] differs from its region's size [${region.size}]`);
  const elements = shape.reduce((a, b) => a * b, 1);
  if (tensor.values.length !== elements) fail(`${tensor.values.length} values for shape [${shape}] (${elements} elements)`);
  return { name, dtype, fullShape, region };
}

/** What the committer supplies besides the rank records. */
export interface ManifestParts {
  layout: CheckpointLayout;
  seed: number;
  dataLoader: DataLoaderPosition;
  rng?: { [key: string]: JsonValue };
  config: JsonValue;
  ranks: readonly RankFileRecord[];
  extra?: { [key: string]: JsonValue };
}

export interface CommitOptions {
  /** Prune to this many checkpoints after committing (pruneCheckpoints). */
  keep?: number;
  /** Fault injection for tests: runs after the manifest is written, before the rename. */
  beforeRename?: () => void | Promise<void>;
}

/**
 * Commits the rank files in `temporaryDir` (from beginCheckpoint) as checkpoint `step` of `root`: checks that
 * every rank's file is there with the size its record gives, writes manifest.json, renames, moves `latest`,
 * deletes leftover temporary directories, and prunes. Returns the checkpoint directory and manifest.
 */
export async function commitCheckpoint(
  root: string,
  step: number,
  temporaryDir: string,
  parts: ManifestParts,
  options: CommitOptions = {},
): Promise<{ dir: string; manifest: CheckpointManifest }> {
  const name = stepDirName(step);
  const coverage = rankCoverageProblem(parts.ranks, parts.layout);
  if (coverage !== undefined) throw new CheckpointError('invalid-argument', temporaryDir, `cannot commit checkpoint ${name}: ${coverage}`);
  for (const record of parts.ranks) {
    const path = join(temporaryDir, record.file);
    const size = await fileSize(path);
    if (size === undefined) throw new CheckpointError('missing-rank', path, `rank ${record.rank}'s file is missing; cannot commit checkpoint ${name}`);
    if (size !== record.bytes) throw new CheckpointError('truncated', path, `rank ${record.rank}'s file has ${size} bytes, its record says ${record.bytes}`);
  }
  const manifest: CheckpointManifest = {
    format: CHECKPOINT_FORMAT,
    version: CHECKPOINT_VERSION,
    step,
    seed: parts.seed,
    layout: { ...parts.layout },
    dataLoader: { ...parts.dataLoader },
    rng: parts.rng ?? {},
    config: parts.config,
    createdAt: new Date().toISOString(),
    ranks: [...parts.ranks].sort((a, b) => a.rank - b.rank),
    extra: parts.extra ?? {},
  };
  // Catch a bad part now rather than at resume time.
  checkManifest(JSON.parse(JSON.stringify(manifest)), join(temporaryDir, MANIFEST_FILE));
  await writeFileDurably(join(temporaryDir, MANIFEST_FILE), [new TextEncoder().encode(`${JSON.stringify(manifest, null, 1)}\n`)]);
  await syncDirectory(temporaryDir);
  await options.beforeRename?.();

  const dir = join(root, name);
  const token = String(process.pid);
  // Re-committing a step (a run resumed from an earlier checkpoint) replaces it: the old one moves aside first.
  let replaced: string | undefined;
  if (await exists(dir)) {
    replaced = join(root, `.${name}.replaced-${token}`);
    await rm(replaced, { recursive: true, force: true });
    await rename(dir, replaced);
  }
  await rename(temporaryDir, dir);
  await syncDirectory(root);
  await replaceFileAtomically(join(root, LATEST_FILE), `${name}\n`, token);
  if (replaced !== undefined) await rm(replaced, { recursive: true, force: true });
  await removeLeftovers(root);
  if (options.keep !== undefined) await pruneCheckpoints(root, options.keep);
  return { dir, manifest };
}

/** Deletes temporary directories of commits that never finished. Only one job may write under a root. */
async function removeLeftovers(root: string): Promise<void> {
  for (const entry of await readdir(root)) {
    if (TEMPORARY_DIR_PATTERN.test(entry) || /^\.latest\.tmp-/.test(entry)) await rm(join(root, entry), { recursive: true, force: true });
  }
}

/** The committed checkpoints under `root`, oldest first. */
export async function listCheckpoints(root: string): Promise<{ step: number; dir: string }[]> {
  let entries: string[];
  try {
    entries = await readdir(root);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
  return entries
    .map((entry) => ({ entry, match: STEP_DIR_PATTERN.exec(entry) }))
    .filter(({ match }) => match !== null)
    .map(({ entry, match }) => ({ step: Number(match![1]), dir: join(root, entry) }))
    .sort((a, b) => a.step - b.step);
}

/** Removes the oldest checkpoints beyond the newest `keep`, never the one `latest` names. Returns what it removed. */
export async function pruneCheckpoints(root: string, keep: number): Promise<string[]> {
  if (!(keep === Infinity || (Number.isInteger(keep) && keep >= 1))) {
    throw new CheckpointError('invalid-argument', root, `checkpoint.keep must be an integer >= 1, got ${keep}`);
  }
  const latest = await readLatest(root);
  const all = await listCheckpoints(root);
  const removed: string[] = [];
  for (const { dir } of all.slice(0, Math.max(0, all.length - keep))) {
    if (latest !== undefined && dir === join(root, latest)) continue;
    // Out of sight first: a kill in the middle of a recursive delete would leave a step folder without
    // its manifest, which every later listing would then have to step around.
    const doomed = join(root, `.${basename(dir)}.pruned-${process.pid}`);
    await rename(dir, doomed);
    await rm(doomed, { recursive: true, force: true });
    removed.push(dir);
  }
  if (removed.length > 0) await syncDirectory(root);
  return removed;
}

/** The directory name in `root/latest`, or undefined when there is none. */
async function readLatest(root: string): Promise<string | undefined> {
  let text: string;
  try {
    text = await readFile(join(root, LATEST_FILE), 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  const name = text.trim();
  // The pointer becomes a path: accept only a step directory's name.
  if (!STEP_DIR_PATTERN.test(name)) {
    throw new CheckpointError('not-found', join(root, LATEST_FILE), `names ${JSON.stringify(name.slice(0, 80))}, not a step-NNNNNN directory`);
  }
  return name;
}

/**
 * A checkpoint directory from `path`: `path` itself when it holds manifest.json, else the checkpoint its
 * `latest` names (a run's output or checkpoint root). Looks in `path/checkpoints` too, so a run's --out
 * directory works whether checkpoints live in it or under it.
 */
export async function resolveCheckpoint(path: string): Promise<string> {
  if (!(await exists(path))) throw new CheckpointError('not-found', path, 'does not exist; pass a checkpoint (step-NNNNNN) directory or a run\'s --out directory');
  if (!(await stat(path)).isDirectory()) throw new CheckpointError('not-found', path, 'is a file, not a folder; pass a checkpoint (step-NNNNNN) directory or a run\'s --out directory');
  if ((await fileSize(join(path, MANIFEST_FILE))) !== undefined) return path;
  for (const root of [path, join(path, RUN_CHECKPOINTS_DIR)]) {
    const latest = await readLatest(root);
    if (latest === undefined) continue;
    const dir = join(root, latest);
    if ((await fileSize(join(dir, MANIFEST_FILE))) === undefined) {
      const present = (await listCheckpoints(root)).map((c) => c.dir);
      throw new CheckpointError(
        'not-found',
        join(root, LATEST_FILE),
        `names ${latest}, which has no ${MANIFEST_FILE}; pass one of the checkpoints present instead: ${present.join(', ') || 'none'}`,
      );
    }
    return dir;
  }
  throw new CheckpointError(
    'not-found',
    path,
    `neither a checkpoint (no ${MANIFEST_FILE}) nor a run directory with a '${LATEST_FILE}' pointer; pass a step-NNNNNN directory or the run's --out directory`,
  );
}

/** The run folder of a checkpoint directory (`RUN/checkpoints/step-NNNNNN`), or undefined for one kept elsewhere. */
export function runFolderOf(checkpointDir: string): string | undefined {
  const root = dirname(resolve(checkpointDir));
  return basename(root) === RUN_CHECKPOINTS_DIR ? dirname(root) : undefined;
}

export interface ExpectedLayout {
  data?: number;
  pipeline?: number;
  tensor?: number;
  order?: string;
}

export interface LoadOptions {
  /** Read every rank file now and check its SHA-256 (and header). Default true. openRank checks its file either way. */
  verify?: boolean;
  /** Refuse a checkpoint whose layout differs in any field given (resume without resharding). */
  expectLayout?: ExpectedLayout;
}

/** A loaded checkpoint: its manifest, and its rank files opened on demand (each checked before use). */
export class Checkpoint {
  private readonly opened = new Map<number, SafetensorsFile>();

  constructor(
    readonly dir: string,
    readonly manifest: CheckpointManifest,
  ) {}

  record(rank: number): RankFileRecord {
    const record = this.manifest.ranks.find((r) => r.rank === rank);
    if (record === undefined) throw new CheckpointError('missing-rank', this.dir, `no rank ${rank} in a checkpoint of world ${this.manifest.layout.world}`);
    return record;
  }

  /** Rank `rank`'s file, read, checked against the manifest (size, SHA-256, tensors) and cached. */
  async openRank(rank: number): Promise<SafetensorsFile> {
    const cached = this.opened.get(rank);
    if (cached !== undefined) return cached;
    const file = await readRankFile(this.dir, this.record(rank));
    this.opened.set(rank, file);
    return file;
  }

  /** Drops cached rank files (their memory) once a rank has taken what it needs. */
  close(): void {
    this.opened.clear();
  }

  /** Rank `rank`'s tensors by name, as saved (views into the file): the same-layout resume path. */
  async rankTensors(rank: number): Promise<Map<string, Float32Array | Int32Array>> {
    const file = await this.openRank(rank);
    const out = new Map<string, Float32Array | Int32Array>();
    for (const record of this.record(rank).tensors) out.set(record.name, record.dtype === 'F32' ? file.float32(record.name) : file.int32(record.name));
    return out;
  }
}

/** Reads and checks manifest.json of `dir` alone (no rank file is looked at); throws CheckpointError with the reason. */
export async function readManifest(dir: string): Promise<CheckpointManifest> {
  const manifestPath = join(dir, MANIFEST_FILE);
  let text: string;
  try {
    text = await readFile(manifestPath, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new CheckpointError('not-found', dir, `no ${MANIFEST_FILE}: not a checkpoint directory, or one whose commit never finished`);
    }
    throw error;
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new CheckpointError('manifest', manifestPath, `is not JSON (${(error as Error).message}); the checkpoint is damaged`);
  }
  return checkManifest(json, manifestPath);
}

/** Reads manifest.json of `dir` and checks the checkpoint; throws CheckpointError with the reason. */
export async function loadCheckpoint(dir: string, options: LoadOptions = {}): Promise<Checkpoint> {
  const manifest = await readManifest(dir);
  if (options.expectLayout !== undefined) checkLayout(join(dir, MANIFEST_FILE), manifest.layout, options.expectLayout);
  for (const record of manifest.ranks) {
    const path = join(dir, record.file);
    const size = await fileSize(path);
    if (size === undefined) throw new CheckpointError('missing-rank', path, `rank ${record.rank}'s file is missing from the checkpoint`);
    if (size !== record.bytes) {
      throw new CheckpointError('truncated', path, `rank ${record.rank}'s file has ${size} bytes but the manifest says ${record.bytes}: the file is truncated or damaged`);
    }
  }
  const checkpoint = new Checkpoint(dir, manifest);
  if (options.verify ?? true) for (const record of manifest.ranks) await readRankFile(dir, record);
  return checkpoint;
}

function checkLayout(source: string, actual: CheckpointLayout, expected: ExpectedLayout): void {
  const differences = (['data', 'pipeline', 'tensor', 'order'] as const)
    .filter((key) => expected[key] !== undefined && expected[key] !== actual[key])
    .map((key) => `${key} ${actual[key]} (expected ${expected[key]})`);
  if (differences.length > 0) {
    throw new CheckpointError(
      'layout',
      source,
      `the checkpoint's layout differs: ${differences.join(', ')}; load it into this layout by resharding (src/checkpoint/reshard.ts) or resume with the layout it was written in`,
    );
  }
}

async function readRankFile(dir: string, record: RankFileRecord): Promise<SafetensorsFile> {
  const path = join(dir, record.file);
  const size = await fileSize(path);
  if (size === undefined) throw new CheckpointError('missing-rank', path, `rank ${record.rank}'s file is missing from the checkpoint`);
  if (size !== record.bytes) {
    throw new CheckpointError('truncated', path, `rank ${record.rank}'s file has ${size} bytes but the manifest says ${record.bytes}`);
  }
  const bytes = await readWhole(path, size, record.rank);
  const digest = sha256Hex(bytes);
  if (digest !== record.sha256) {
    throw new CheckpointError('checksum', path, `SHA-256 ${digest} differs from the manifest's ${record.sha256}: the file is corrupt; resume from an earlier checkpoint`);
  }
  const file = parseSafetensors(bytes, path);
  for (const tensor of record.tensors) {
    const entry = file.tensors.get(tensor.name);
    if (entry === undefined) throw new CheckpointError('format', path, `holds no tensor ${tensor.name}, which the manifest lists`);
    if (entry.dtype !== tensor.dtype || entry.shape.join() !== tensor.region.size.join()) {
      throw new CheckpointError('format', path, `tensor ${tensor.name} is ${entry.dtype} [${entry.shape}] but the manifest says ${tensor.dtype} [${tensor.region.size}]`);
    }
  }
  return file;
}

/** Bytes read at a time: fs.readFile refuses files above 2 GiB, and one read call moves at most that. */
const READ_CHUNK_BYTES = 1 << 30;

/**
 * The whole file in one buffer, read a chunk at a time so that a rank's file above 2 GiB loads (up to
 * the largest buffer this Node makes); a larger one is refused naming the file.
 */
async function readWhole(path: string, size: number, rank: number): Promise<Buffer> {
  if (size > bufferConstants.MAX_LENGTH) {
    throw new CheckpointError(
      'too-large',
      path,
      `rank ${rank}'s file has ${size} bytes, more than one buffer holds here (${bufferConstants.MAX_LENGTH}): save with more pipeline or tensor parallelism, so each rank's share is smaller`,
    );
  }
  const bytes = Buffer.allocUnsafe(size);
  const handle = await open(path, 'r');
  try {
    for (let offset = 0; offset < size; ) {
      const { bytesRead } = await handle.read(bytes, offset, Math.min(READ_CHUNK_BYTES, size - offset), offset);
      if (bytesRead === 0) throw new CheckpointError('truncated', path, `rank ${rank}'s file ended after ${offset} of its ${size} bytes while it was read`);
      offset += bytesRead;
    }
  } finally {
    await handle.close();
  }
  return bytes;
}

async function fileSize(path: string): Promise<number | undefined> {
  try {
    return (await stat(path)).size;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT' || (error as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
    throw error;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw error;
  }
}

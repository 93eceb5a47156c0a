/**
 * Implements: the public surface of checkpoints (format, storage, resharding) for the trainer, the workers
 * and the CLI. See checkpoint.ts for the on-disk layout and commit protocol.
 */
export { CheckpointError, type CheckpointProblem } from './errors.ts';
export {
  DTYPE_BYTES,
  MAX_HEADER_BYTES,
  SafetensorsFile,
  parseSafetensors,
  serializeSafetensors,
  type Dtype,
  type SafetensorsEntry,
  type TensorToWrite,
} from './safetensors.ts';
export {
  CHECKPOINT_FORMAT,
  CHECKPOINT_VERSION,
  MANIFEST_FILE,
  checkManifest,
  rankFileName,
  type CheckpointLayout,
  type CheckpointManifest,
  type DataLoaderPosition,
  type JsonValue,
  type RankFileRecord,
  type TensorRecord,
  type TensorRegion,
} from './manifest.ts';
export {
  Checkpoint,
  LATEST_FILE,
  RUN_CHECKPOINTS_DIR,
  STEP_DIR_PATTERN,
  beginCheckpoint,
  commitCheckpoint,
  firstMomentName,
  listCheckpoints,
  loadCheckpoint,
  readManifest,
  pruneCheckpoints,
  resolveCheckpoint,
  runFolderOf,
  secondMomentName,
  stepDirName,
  writeRankShard,
  type CommitOptions,
  type ExpectedLayout,
  type LoadOptions,
  type ManifestParts,
  type RankShardMeta,
  type RankTensor,
} from './checkpoint.ts';
export {
  assembleRegion,
  checkpointHolds,
  copyOverlap,
  intersectRegions,
  optimizerStepOf,
  planRegionReads,
  readRegion,
  type RegionRead,
  type RegionTarget,
} from './reshard.ts';
export { dataLoaderPosition, loadRankState, rankTensorsToSave, readParams, type RankState } from './rank-state.ts';
export { convertCheckpoint, type ConvertOptions, type ConvertResult, type TargetLayout } from './convert.ts';
export { inspectCheckpoint, type CheckpointReport, type RankFileReport } from './inspect.ts';

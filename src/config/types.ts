/**
 * Implements: the training job configuration, mirroring the seed's CONFIG in camelCase.
 * The JSON file holds a `TrainConfigInput`; `resolveConfig` (config/resolve.ts) fills defaults,
 * applies `--set` overrides and validates everything before any work starts.
 */
import type { BackendName } from '../backend/names.ts';
import type { GPTConfig, ModelConfigInput } from '../model/config.ts';
import type { ScheduleKind } from '../scheduler/ops.ts';
import type { LrScheduleKind } from '../train/lr-schedule.ts';

export interface ParallelConfig {
  pipeline: number;
  tensor: { mode: '1d'; size: number };
  data: number;
  /**
   * Data parallel with the hand-written backward: the gradient all-reduce goes in buckets during the
   * step's last backward (Megatron's --overlap-grad-reduce) instead of after it.
   */
  overlapGradReduce: boolean;
}

export interface OptimizerConfig {
  /** `adam`: torch.optim.Adam, weight decay added to the gradient (L2), as the seed uses. `adamw`: decoupled. */
  kind: 'adam' | 'adamw';
  /** The peak learning rate: what warmup rises to and decay starts from (train/lr-schedule.ts). */
  lr: number;
  /** How the learning rate changes over the run after warmup (train/lr-schedule.ts). */
  schedule: LrScheduleKind;
  /** Steps of linear warmup from 0 to lr; 0: none. */
  warmupSteps: number;
  /** Where linear and cosine decay end, and inverse-square-root's floor. */
  minLr: number;
  /** The step where linear and cosine decay reach minLr; undefined: the run's last step. */
  decaySteps?: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** Clip gradients to this global L2 norm; 0 disables. */
  gradClip: number;
}

/**
 * The seed's `fp16=dict(mode=AMP_TYPE.NAIVE)`. tfjs has no half-precision compute: weights, compute and
 * optimizer stay float32; activations and their gradients cross the wire between pipeline stages as
 * float16, protected by a dynamic loss scale.
 */
export interface Fp16Config {
  mode: 'naive';
  initialScale: number;
  growthInterval: number;
  hysteresis: number;
}

export interface DataConfig {
  /** Loose JSON: one {"text": ...} object per line. */
  path: string;
  /**
   * A separate loose-JSON file of held-out text to evaluate on; excludes validFraction. Omitted (and
   * validFraction 0): the run evaluates nothing.
   */
  validPath?: string;
  /**
   * The share of data.path's samples held out for validation, spread evenly through the file
   * (dataset/validation-split.ts); no training batch ever contains one. 0: none.
   */
  validFraction: number;
  /** Count and skip lines that are not valid JSON or lack `text`, instead of failing. */
  skipBadLines: boolean;
  shuffle: boolean;
  dropLast: boolean;
}

export interface TrainConfig {
  model: GPTConfig;
  parallel: ParallelConfig;
  numMicroBatches: number;
  numChunks: number;
  /** Pipeline schedule; interleaved 1F1B runs numChunks model chunks per stage. */
  schedule: ScheduleKind;
  /** How layers spread over pipeline stages: equal counts, or equal estimated cost (src/parallel/partition-balanced.ts). */
  partition: 'uniform' | 'balanced';
  /** Samples per data-parallel rank per step (the seed's BATCH_SIZE). Global batch = batchSize x dp x gradientAccumulation. */
  batchSize: number;
  gradientAccumulation: number;
  seqLen: number;
  /** Exactly one of epochs / steps bounds the run; --steps overrides both. */
  epochs?: number;
  steps?: number;
  optimizer: OptimizerConfig;
  data: DataConfig;
  seed: number;
  /** Omitted: best present (tensorflow, then wasm, then cpu). */
  backend?: BackendName;
  /** Print a metrics line every this many steps (non-TTY output). */
  logInterval: number;
  /** Mixed precision on the wire; omitted: everything float32. */
  fp16?: Fp16Config;
  checkpoint: CheckpointConfig;
  /** Validation during training, on data.validPath or data.validFraction's held-out samples. */
  eval: EvalConfig;
  comm: CommConfig;
  restart: {
    /** Restarts from the last checkpoint after a rank dies or stops answering (single-node jobs). */
    max: number;
    /** The watchdog: no step for stallFactor x the median step time (at least stallMinMs) rolls the job back. */
    stallFactor: number;
    stallMinMs: number;
  };
  /** A float32 step whose loss or gradient norm is not finite: stop with an error, or skip its update. */
  nonFinite: 'error' | 'skip';
}

export interface CommConfig {
  /**
   * Where the tensors between ranks travel: `tcp`, direct links between the ranks (comm/data-plane.ts),
   * NATS carrying only control; `nats`, through the broker like every other message (for sites where
   * ranks cannot reach each other directly).
   */
  dataPlane: 'tcp' | 'nats';
  /**
   * How pipeline activations and their gradients travel: `float32`, or in half the bytes as `float16`
   * or `bfloat16` (compute stays float32). fp16 mode sends float16 unless this says bfloat16.
   */
  wirePrecision: 'float32' | 'float16' | 'bfloat16';
}

export interface EvalConfig {
  /** Evaluate every this many steps, and at the end of the run; 0: only at the end. */
  every: number;
  /** Global batches evaluated each time; undefined: every whole global batch of the validation data. */
  batches?: number;
}

export interface CheckpointConfig {
  /** Save every this many steps and at the end of the run; 0: only when asked (`ctl checkpoint`). */
  every: number;
  /** Keep this many checkpoints (the newest, and whichever `latest` names). */
  keep: number;
}

/** What a config file may contain: everything optional except what has no sensible default. */
export interface TrainConfigInput {
  model?: ModelConfigInput;
  parallel?: Partial<Omit<ParallelConfig, 'tensor'>> & { tensor?: Partial<ParallelConfig['tensor']> };
  numMicroBatches?: number;
  numChunks?: number;
  schedule?: ScheduleKind;
  partition?: 'uniform' | 'balanced';
  batchSize?: number;
  gradientAccumulation?: number;
  seqLen?: number;
  epochs?: number;
  steps?: number;
  optimizer?: Partial<OptimizerConfig>;
  data?: Partial<DataConfig>;
  seed?: number;
  backend?: BackendName;
  logInterval?: number;
  fp16?: Partial<Fp16Config>;
  checkpoint?: Partial<CheckpointConfig>;
  eval?: Partial<EvalConfig>;
  comm?: Partial<CommConfig>;
  restart?: { max?: number; stallFactor?: number; stallMinMs?: number };
  nonFinite?: 'error' | 'skip';
}

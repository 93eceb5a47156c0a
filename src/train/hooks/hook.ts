/**
 * Implements: the trainer's hook interface, like ColossalAI's trainer hooks (LossHook, ThroughputHook,
 * LogMetricByStepHook, LogMetricByEpochHook). Hooks run in list order; earlier hooks put numbers into
 * `state.metrics` that later ones (loggers) read, so order the list producers first.
 */
import type { TrainConfig } from '../../config/types.ts';
import type { EvaluationResult } from '../evaluation-plan.ts';

/** What one optimizer step produced. */
export interface StepResult {
  /** 1-based optimizer step. */
  step: number;
  /** 0-based epoch the step belongs to. */
  epoch: number;
  loss: number;
  /** Tokens (samples x seqLen, padding included) this step trained on, over all ranks. */
  tokens: number;
  samples: number;
  stepMs: number;
  /** Since training started. */
  elapsedMs: number;
  learningRate: number;
  gradNorm: number;
  /** The update was skipped (fp16 overflow, or a non-finite loss or norm under nonFinite "skip"). */
  skipped?: boolean;
  /** Skipped because the loss or gradient norm was not finite. */
  nonFinite?: boolean;
  /** fp16 mode: the loss scale the step used. */
  lossScale?: number;
  /** Resident memory of the process that ran (or, in a job, reported) the step, MiB. */
  rssMb?: number;
}

export interface TrainerState {
  readonly config: TrainConfig;
  /** The step the run stops after (1-based). */
  readonly totalSteps: number;
  /** The step the run starts from (0 for a fresh run). */
  readonly startStep: number;
  readonly stepsPerEpoch: number;
  /** Numbers of the current step, keyed by metric name; cleared before each step. */
  metrics: Record<string, number>;
  log(line: string): void;
}

export interface Hook {
  readonly name: string;
  beforeTrain?(state: TrainerState): void;
  beforeEpoch?(state: TrainerState, epoch: number): void;
  beforeStep?(state: TrainerState, step: number): void;
  afterStep?(state: TrainerState, result: StepResult): void;
  /** A validation loss measured after a step (config.eval; train/evaluation-plan.ts). */
  afterEvaluation?(state: TrainerState, result: EvaluationResult): void;
  afterEpoch?(state: TrainerState, epoch: number): void;
  afterTrain?(state: TrainerState): void;
}

/**
 * Implements: the single-process training loop, the reference every parallel layout must reproduce.
 *
 * One optimizer step: the global batch of the step (the global batch rule, dataset/sampler.ts) is cut
 * into gradientAccumulation rounds and numMicroBatches micro-batches; each micro-batch's loss is the
 * seed's GPTLMLoss (a mean over its tokens), its gradient is summed, and the step's gradient and loss
 * are the means over all micro-batches: equal to one big batch's, since micro-batches are equal-sized.
 * Hooks observe; the loop itself only computes.
 */
import { wallClockMs, type TraceRecorder } from '../trace/trace.ts';
import { learningRateAt } from './lr-schedule.ts';
import * as tf from '../tf.ts';
import { readScalar } from '../backend/tensor-view.ts';
import type { TrainConfig } from '../config/types.ts';
import { gatherBatch, microBatches, rankSlice, type BatchSampler } from '../dataset/sampler.ts';
import type { TokenizedDataset } from '../dataset/webtext.ts';
import type { DropoutContext } from '../model/dropout.ts';
import type { GPT, TokenBatch } from '../model/gpt.ts';
import { disposeSliceSaved, modelLossAndGrads, sliceBackwardParts, sliceForward } from '../model/manual/slice.ts';
import { numElements } from '../model/params.ts';
import { addGradient } from '../model/gradient-sum.ts';
import { BucketedGradientReduction } from './bucketed-reduction.ts';
import type { Hook, StepResult, TrainerState } from './hooks/hook.ts';
import { globalBatchSampler, totalStepsOf } from './global-batch.ts';
import { averageOverGlobalBatch, meansOfReduced, type StepMeans } from './gradient-reduction.ts';
import { saveCheckpoint, type CheckpointTarget } from './checkpointing.ts';
import { NonFiniteGuard } from './non-finite.ts';
import { AdamOptimizer, globalNorm } from './optimizer.ts';
import { evaluationBatches, evaluationDue, evaluationMicroBatches, type EvaluationResult } from './evaluation-plan.ts';

/**
 * This process is one data-parallel rank of `size`: it trains on its own slice of each global batch and
 * `allReduce` (a deterministic sum across the dp group) combines the gradients and losses. `values` is
 * the step's scratch buffer: the reduction may overwrite it (ProcessGroup's inPlace).
 */
export interface DataParallelRole {
  rank: number;
  size: number;
  allReduce(values: Float32Array): Promise<Float32Array>;
}

export interface TrainerOptions {
  config: TrainConfig;
  model: GPT;
  dataset: TokenizedDataset;
  /** Held-out samples, evaluated when evaluation-plan.ts says (config.eval); omitted: none. */
  validation?: TokenizedDataset;
  hooks?: Hook[];
  /** Stop after this 1-based step; default from config.steps or config.epochs. */
  totalSteps?: number;
  log?: (line: string) => void;
  /** Checked between steps: an aborted signal ends the run cleanly after the step in flight. */
  signal?: AbortSignal;
  /** Omitted: this process plays every data-parallel rank itself, in rank order. */
  dataParallel?: DataParallelRole;
  /** With config.parallel.overlapGradReduce: bytes of gradient per all-reduce bucket (default BUCKET_BYTES, DDP's 25 MB). */
  gradientBucketBytes?: number;
  /** Asked before each 0-based step (and once after the last): 'stop' ends the run there. */
  gate?: (step: number) => Promise<'run' | 'stop'>;
  /** The first 0-based step to run (a resumed run: the checkpoint's step). */
  startStep?: number;
  /** Save every `every` steps and at the end of the run (every = 0: never), into `target`. */
  checkpoint?: { target: CheckpointTarget; every: number };
  /** An optimizer with restored state (a resumed run); default: a fresh one. */
  optimizer?: AdamOptimizer;
  /** Where each micro-batch's forward and backward and each update go as timeline events. */
  trace?: TraceRecorder;
}

export interface FitResult {
  stepsDone: number;
  losses: number[];
  stopped: boolean;
  /** Steps whose update was skipped because their loss or gradient norm was not finite (nonFinite = "skip"). */
  skipped: number;
}

export class Trainer {
  readonly sampler: BatchSampler;
  readonly optimizer: AdamOptimizer;
  readonly state: TrainerState;
  private readonly hooks: Hook[];
  private readonly variableList: tf.Variable[];
  private readonly nonFinite: NonFiniteGuard;

  constructor(private readonly options: TrainerOptions) {
    const { config, dataset } = options;
    this.sampler = globalBatchSampler(config, dataset.numSamples);
    if (options.dataParallel !== undefined && options.dataParallel.size !== config.parallel.data) {
      throw new Error(`data-parallel role of size ${options.dataParallel.size} but the config says parallel.data=${config.parallel.data}`);
    }
    if (dataset.seqLen !== config.seqLen) {
      throw new Error(`dataset was tokenized with seqLen ${dataset.seqLen} but the config says ${config.seqLen}`);
    }
    const totalSteps = totalStepsOf(config, this.sampler, options.totalSteps);
    // Refused now, not at the first evaluation: a validation set smaller than one global batch.
    if (options.validation !== undefined) evaluationBatches(config, options.validation.numSamples);
    this.optimizer = options.optimizer ?? new AdamOptimizer(config.optimizer);
    this.hooks = options.hooks ?? [];
    this.variableList = options.model.variables();
    const log = options.log ?? ((line: string) => process.stdout.write(line + '\n'));
    this.state = { config, totalSteps, startStep: options.startStep ?? 0, stepsPerEpoch: this.sampler.stepsPerEpoch, metrics: {}, log };
    // Every data-parallel rank decides alike; one of them tells.
    this.nonFinite = new NonFiniteGuard(config.nonFinite, (options.dataParallel?.rank ?? 0) === 0 ? log : undefined);
  }

  async fit(): Promise<FitResult> {
    const { state } = this;
    const losses: number[] = [];
    const started = performance.now();
    this.callHooks('beforeTrain');
    let epoch = -1;
    let step = state.startStep;
    let stopped = false;
    for (; step < state.totalSteps; step++) {
      if (this.options.signal?.aborted || (this.options.gate !== undefined && (await this.options.gate(step)) === 'stop')) {
        stopped = true;
        break;
      }
      const stepEpoch = this.sampler.epochOf(step);
      if (stepEpoch !== epoch) {
        if (epoch >= 0) this.callHooks('afterEpoch', epoch);
        epoch = stepEpoch;
        this.callHooks('beforeEpoch', epoch);
      }
      state.metrics = {};
      this.callHooks('beforeStep', step + 1);
      const stepStart = performance.now();
      const { loss, gradNorm, samples, skipped } = await this.trainStep(step);
      const now = performance.now();
      const result: StepResult = {
        step: step + 1,
        epoch,
        loss,
        tokens: samples * state.config.seqLen,
        samples,
        stepMs: now - stepStart,
        elapsedMs: now - started,
        learningRate: learningRateAt(state.config.optimizer, step + 1, state.totalSteps),
        gradNorm,
        // The single-process trainer skips a step only for a non-finite loss or norm (nonFinite "skip").
        ...(skipped === true ? { skipped: true, nonFinite: true } : {}),
        rssMb: Math.round(process.memoryUsage.rss() / 2 ** 20),
      };
      losses.push(loss);
      this.callHooks('afterStep', result);
      const every = this.options.checkpoint?.every ?? 0;
      if (every > 0 && (step + 1) % every === 0) await this.saveCheckpoint(step + 1);
      if (this.options.validation !== undefined && evaluationDue(state.config, step + 1, state.totalSteps)) {
        this.callHooks('afterEvaluation', await this.evaluate(step + 1));
      }
      // Yield so signals, timers and output get their turn between steps.
      await new Promise((resolve) => setImmediate(resolve));
    }
    // The last gate call tells whoever runs the gate that this rank has finished.
    if (!stopped && this.options.gate !== undefined) await this.options.gate(step);
    const every = this.options.checkpoint?.every ?? 0;
    // The end of the run is saved too (a checkpoint of any step), as the workers' coordinator does; so is
    // the step a stop signal ended the run after (preemption), whatever `every` says.
    const savedInLoop = every > 0 && step % every === 0;
    const stoppedBySignal = stopped && this.options.signal?.aborted === true;
    if (this.options.checkpoint !== undefined && step > state.startStep && !savedInLoop && (every > 0 || stoppedBySignal)) await this.saveCheckpoint(step);
    if (epoch >= 0 && (step === state.totalSteps || stopped)) this.callHooks('afterEpoch', epoch);
    this.callHooks('afterTrain');
    const skippedLine = this.nonFinite.summary();
    if (skippedLine !== undefined && (this.options.dataParallel?.rank ?? 0) === 0) state.log(skippedLine);
    return { stepsDone: step - state.startStep, losses, stopped, skipped: this.nonFinite.skipped };
  }

  /**
   * One optimizer step (0-based `step`): forward and backward of this process's micro-batches, the
   * data-parallel reduction when there is one, then the update. Loss and gradient are means over every
   * micro-batch of the global batch. A non-finite loss or gradient norm never reaches the weights: the
   * step throws or is skipped (config nonFinite); the values are the reduced ones, equal on every dp rank.
   */
  async trainStep(step: number): Promise<{ loss: number; gradNorm: number; samples: number; skipped: boolean }> {
    const { config, model, dataParallel } = this.options;
    const globalBatch = this.sampler.globalBatch(step);
    const dp = config.parallel.data;
    const myDpRanks = dataParallel === undefined ? Array.from({ length: dp }, (_, r) => r) : [dataParallel.rank];
    const micro: Int32Array[] = [];
    for (let accumIndex = 0; accumIndex < config.gradientAccumulation; accumIndex++) {
      for (const dpRank of myDpRanks) {
        const indices = rankSlice(globalBatch, { dp, dpRank, gradientAccumulation: config.gradientAccumulation, accumIndex });
        micro.push(...microBatches(indices, config.numMicroBatches));
      }
    }
    const gradSums = new Map<string, tf.Tensor>();
    let lossSum = 0;
    const totalMicroBatches = config.numMicroBatches * config.gradientAccumulation * dp;
    const names = model.specs.map((spec) => spec.name);
    // Data parallel with the hand-written backward: the last micro-batch's backward all-reduces in buckets as it goes.
    const overlapped = dataParallel !== undefined && config.parallel.overlapGradReduce && !config.model.checkpoint;
    let means: StepMeans | undefined;
    // Read after the loop, all at once: a GPU read waits for the work queued before it.
    const losses: tf.Tensor[] = [];
    const lossSumOf = async () => {
      for (const loss of losses.splice(0)) {
        lossSum += await readScalar(loss);
        loss.dispose();
      }
      return lossSum;
    };
    for (const [index, sampleIds] of micro.entries()) {
      const batch: TokenBatch = { ...gatherBatch(this.options.dataset, sampleIds), sampleIds };
      const dropout = { seed: config.seed, step, sampleIds };
      if (overlapped && index === micro.length - 1) {
        means = await this.lastBackwardReducing(batch, dropout, names, gradSums, await lossSumOf(), 1 / totalMicroBatches);
        break;
      }
      const started = wallClockMs();
      const { loss, grads } = this.lossAndGradients(batch, dropout);
      this.options.trace?.record('forward and backward', 'compute', started, wallClockMs(), { step: step + 1, microBatch: index });
      losses.push(loss);
      for (const spec of model.specs) addGradient(gradSums, spec.name, grads.get(spec.name)!);
    }
    means ??= await averageOverGlobalBatch(names, gradSums, await lossSumOf(), 1 / totalMicroBatches, dataParallel?.allReduce);
    try {
      // The optimizer's own norm, computed first so the check sees it before any weight moves.
      const gradNorm = await globalNorm([...model.params.keys()].map((name) => means.grads.get(name)!));
      const skipped = this.nonFinite.check(step + 1, { loss: means.loss, gradNorm }) !== undefined;
      const learningRate = learningRateAt(config.optimizer, step + 1, this.state.totalSteps);
      const optimizerStart = wallClockMs();
      if (!skipped) await this.optimizer.apply(model.params, means.grads, { gradNorm, learningRate });
      if (!skipped) this.options.trace?.record('optimizer step', 'compute', optimizerStart, wallClockMs(), { step: step + 1 });
      this.options.trace?.flush();
      return { loss: means.loss, gradNorm, samples: globalBatch.length, skipped };
    } finally {
      for (const grad of means.grads.values()) grad.dispose();
    }
  }

  /**
   * The validation loss after `completedSteps` steps: the mean of the micro-batch losses over this
   * process's share of the evaluated samples (evaluation-plan.ts), summed over the data-parallel ranks.
   */
  async evaluate(completedSteps: number): Promise<EvaluationResult> {
    const { config, model, dataParallel, validation } = this.options;
    if (validation === undefined) throw new Error('evaluate: the trainer was given no validation data');
    const started = performance.now();
    const traceStart = wallClockMs();
    const dpRanks = dataParallel === undefined ? Array.from({ length: config.parallel.data }, (_, r) => r) : [dataParallel.rank];
    // Read after the loop, all at once: a GPU read waits for the work queued before it.
    const losses: tf.Tensor[] = [];
    let samples = 0;
    try {
      for (const dpRank of dpRanks) {
        for (const sampleIds of evaluationMicroBatches(config, validation.numSamples, dpRank)) {
          const batch: TokenBatch = { ...gatherBatch(validation, sampleIds), sampleIds };
          // The training forward (what every stage runs too), its saved activations dropped at once.
          const { output, saved } = sliceForward(model, batch, undefined);
          disposeSliceSaved(saved);
          losses.push(output);
          samples += batch.batch;
        }
      }
      let lossSum = 0;
      for (const loss of losses) lossSum += await readScalar(loss);
      let sums: Float32Array = Float32Array.of(lossSum, losses.length, samples);
      if (dataParallel !== undefined && dataParallel.size > 1) sums = await dataParallel.allReduce(sums);
      this.options.trace?.record('evaluation', 'compute', traceStart, wallClockMs(), { afterStep: completedSteps });
      this.options.trace?.flush();
      const loss = sums[0] / sums[1];
      return { step: completedSteps, loss, perplexity: Math.exp(loss), samples: sums[2], elapsedMs: performance.now() - started };
    } finally {
      for (const loss of losses) loss.dispose();
    }
  }

  dispose(): void {
    this.optimizer.dispose();
  }

  /**
   * The step's last micro-batch with the data-parallel reduction started during its backward: each
   * bucket of final gradient sums goes out as soon as the backward has passed it (bucketed-reduction.ts),
   * and the backward yields to the event loop between blocks so the messages move meanwhile.
   */
  private async lastBackwardReducing(
    batch: TokenBatch, dropout: DropoutContext, names: readonly string[], gradSums: Map<string, tf.Tensor>, lossSumBefore: number, scale: number,
  ): Promise<StepMeans> {
    const { model, dataParallel } = this.options;
    const sizes = model.specs.map((spec) => numElements(spec.shape));
    const reduction = new BucketedGradientReduction(names, sizes, dataParallel!.allReduce, this.options.gradientBucketBytes);
    const { output, saved } = sliceForward(model, batch, undefined, { dropout });
    const loss = await readScalar(output);
    output.dispose();
    reduction.setLoss(lossSumBefore + loss);
    // The yielded gradients are taken over or disposed here; the generator's returned map repeats them.
    const parts = sliceBackwardParts(model, saved);
    for (let part = parts.next(); part.done !== true; part = parts.next()) {
      for (const [name, grad] of part.value) {
        addGradient(gradSums, name, grad);
        reduction.setGradient(name, gradSums.get(name)!);
      }
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    return meansOfReduced(names, gradSums, await reduction.finish(), scale);
  }

  /**
   * One micro-batch's loss and gradients by parameter name: the hand-written backward (saved
   * activations, measured 1.1x faster than autodiff on a whole step), or with model.checkpoint set,
   * autodiff over the forward, which keeps no activations between the two.
   */
  private lossAndGradients(batch: TokenBatch, dropout: DropoutContext): { loss: tf.Tensor; grads: Map<string, tf.Tensor> } {
    const { model, config } = this.options;
    if (!config.model.checkpoint) return modelLossAndGrads(model, batch, { dropout });
    const { value, grads } = tf.variableGrads(() => model.loss(batch, { dropout }), this.variableList);
    return { loss: value, grads: new Map(model.specs.map((spec, index) => [spec.name, grads[this.variableList[index].name]])) };
  }

  private async saveCheckpoint(completedSteps: number): Promise<void> {
    const { config, model } = this.options;
    const dir = await saveCheckpoint(this.options.checkpoint!.target, completedSteps, this.sampler.stepsPerEpoch, config, model, this.optimizer);
    this.state.log(`checkpoint of step ${completedSteps}: ${dir}`);
  }

  private callHooks<K extends keyof Hook>(event: K, ...args: unknown[]): void {
    for (const hook of this.hooks) {
      const handler = hook[event] as ((state: TrainerState, ...rest: unknown[]) => void) | undefined;
      handler?.call(hook, this.state, ...args);
    }
  }
}


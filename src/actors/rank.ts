/**
 * Implements: the actors of one rank of a pipeline or tensor-parallel job, built by one function that
 * worker processes and simulated jobs (launcher/simulated-rank.ts) both call. `spawnRank` makes the rank's process
 * groups (the pipeline for activations, data parallel for gradients, the embedding group for the tied
 * weights), its pipeline stage (chunks of layers, sharded over its tensor-parallel group), its optimizer,
 * restores its shard of a checkpoint, and spawns its stage actor (which runs the scheduler's actions)
 * and, on the first and last stage, its SharedWeight actor. The rank's driver then opens each step the
 * coordinator's gate lets run (`runStep`).
 */
import { createHash } from 'node:crypto';
import type { ActorSystemRef } from 'nact';
import { readTensor } from '../backend/tensor-view.ts';
import type { Bus } from '../comm/bus.ts';
import { ProcessGroup } from '../comm/collectives.ts';
import type { DataPlane } from '../comm/data-plane.ts';
import type { TrainConfig } from '../config/types.ts';
import { wirePrecisionOf } from '../comm/tensor-wire.ts';
import type { TokenizedDataset } from '../dataset/webtext.ts';
import { WORD_EMBEDDING } from '../model/params.ts';
import type { ParallelGrid } from '../parallel/grid.ts';
import { partitionForRun } from '../parallel/run-partition.ts';
import { SharedWeights } from '../shared-weights/shared-weights.ts';
import { PipelineStepExecutor, type PipelineStepResult, type StageEvaluation } from '../stages/pipeline-step.ts';
import { lowerEvaluationActions } from '../scheduler/actions.ts';
import { evaluationMicroBatchCount } from '../train/evaluation-plan.ts';
import { PipelineStage } from '../stages/stage.ts';
import { TracePart } from '../trace/trace-parts.ts';
import { TraceRecorder } from '../trace/trace.ts';
import { theoreticalBubbleOf } from '../scheduler/measure.ts';
import { placementOf, tiedWeightCrossesStages } from '../scheduler/placement.ts';
import type * as tf from '../tf.ts';
import { globalBatchSampler } from '../train/global-batch.ts';
import { DynamicLossScaler } from '../train/loss-scaler.ts';
import { NonFiniteGuard } from '../train/non-finite.ts';
import { AdamOptimizer } from '../train/optimizer.ts';
import { restoreShard, writeShard } from '../train/checkpointing.ts';
import { paramsForRank } from '../model/sharding.ts';
import type { RankFileRecord } from '../checkpoint/index.ts';
import type { ActorStatus } from './actor-status.ts';
import type { RemoteActors } from './remote.ts';
import { SharedWeightActor } from './shared-weight-actor.ts';
import { lowerStageOfSchedule, stageActionsOfStep } from './scheduler-actor.ts';
import { describeCosts } from './auto-schedule-switch.ts';
import { simulatedBubble } from '../scheduler/auto-zero-bubble.ts';
import { StageActor } from './stage-actor.ts';

export interface SpawnRankOptions {
  config: TrainConfig;
  grid: ParallelGrid;
  rank: number;
  bus: Bus;
  system: ActorSystemRef;
  remote: RemoteActors;
  dataset: TokenizedDataset;
  /** The held-out samples evaluations read (train/evaluation-plan.ts); omitted: none. */
  validation?: TokenizedDataset;
  log: (line: string) => void;
  /** A verified checkpoint folder to start from ('' for a fresh start). */
  resume: string;
  /** The run's length, for the learning rate schedule. */
  totalSteps: number;
  /** The rank's direct links for tensors; absent: every piece goes through the bus. */
  dataPlane?: DataPlane;
  /** How long the stage actor waits for a missing action (default: stage-actor.ts). */
  actionTimeoutMs?: number;
  /** Process-group receive timeout (default: collectives.ts). */
  receiveTimeoutMs?: number;
  /** The run folder the rank's timeline streams into (its trace part), step by step; absent: kept in memory. */
  traceFolder?: string;
}

export interface RankActors {
  /** The first step to run (0, or the checkpoint's). */
  readonly startStep: number;
  runStep(step: number): Promise<PipelineStepResult>;
  /** The evaluation after `step` steps, run by the stage actor from the scheduler's forwards. */
  evaluate(step: number): Promise<StageEvaluation>;
  writeShard(folder: string, completedSteps: number): Promise<RankFileRecord>;
  /** The rank's actors as `ctl status` lists them. */
  statuses(): ActorStatus[];
  /** After the last step: the measured bubble, the trace's last events, the tied copies' hash. */
  finish(): Promise<void>;
  /**
   * The rank is ending before its run did (shut down, killed in a simulated job): the stage actor stops
   * and the process groups close, so whatever waits on a step or a receive fails at once and the driver
   * unwinds (and disposes) instead of holding the stage until a timeout.
   */
  abort(): void;
  dispose(): void;
}

export async function spawnRank(options: SpawnRankOptions): Promise<RankActors> {
  const { config, grid, rank, bus, log } = options;
  const { pp, dp, tp } = grid.coordinates(rank);
  const group = (name: string, ranks: number[]) =>
    new ProcessGroup({ bus, name, ranks, rank, log, dataPlane: options.dataPlane, ...(options.receiveTimeoutMs === undefined ? {} : { timeoutMs: options.receiveTimeoutMs }) });
  const pipelineGroup = group(grid.groupName('pp', rank), grid.pipelineGroup(rank));
  const dpGroup = group(grid.groupName('dp', rank), grid.dataGroup(rank));
  const tensorGroup = group(grid.groupName('tp', rank), grid.tensorGroup(rank));
  const modelParallelGroup = group(grid.groupName('tp-pp', rank), grid.group('tp-pp', rank));
  const sharedWeights = new SharedWeights();
  const groups = [pipelineGroup, dpGroup, tensorGroup, modelParallelGroup];
  const placement = placementOf(config.schedule);
  if (grid.inEmbeddingGroup(rank) && tiedWeightCrossesStages(grid.pipeline, config.numChunks, placement)) {
    const embeddingGroup = group(grid.embeddingGroupName(rank), grid.embeddingGroup(rank));
    sharedWeights.register(embeddingGroup, [WORD_EMBEDDING]);
    groups.push(embeddingGroup);
  }
  let mixedPrecision: { scaler: DynamicLossScaler; worldGroup: ProcessGroup } | undefined;
  if (config.fp16 !== undefined) {
    const worldGroup = group('world', Array.from({ length: grid.world }, (_, r) => r));
    groups.push(worldGroup);
    mixedPrecision = { scaler: new DynamicLossScaler(config.fp16), worldGroup };
  }
  // A NATS publish before the peer has subscribed is lost: meet every member once before any message.
  for (const g of groups) await g.ready();

  const layers = partitionForRun(config)[pp];
  log(`stage ${pp}: layers ${layers.map(([start, end]) => `[${start}, ${end})`).join(' ')}`);
  const trace = new TraceRecorder(
    rank,
    `rank ${rank}: stage ${pp}${grid.tensor > 1 ? `, shard ${tp}` : ''}${grid.data > 1 ? `, replica ${dp}` : ''}`,
    options.traceFolder === undefined ? undefined : new TracePart(options.traceFolder, rank),
  );
  const stage = new PipelineStage({
    config,
    pipelineRank: pp,
    pipelineSize: grid.pipeline,
    chunkLayers: layers,
    pipelineGroup,
    stageRanks: grid.pipelineGroup(rank),
    trace,
    tensorGroup,
    wirePrecision: wirePrecisionOf(config),
    placement,
  });
  const params = new Map<string, tf.Variable>();
  for (const set of stage.parameterSets()) for (const [name, variable] of set) params.set(name, variable);
  const optimizer = new AdamOptimizer(config.optimizer);
  const held = paramsForRank(config.model, { layerRanges: layers, tp: grid.tensor, tpRank: tp });
  const closeGroups = () => {
    for (const g of groups) g.close();
  };
  const releaseStage = () => {
    stage.dispose();
    optimizer.dispose();
    closeGroups();
  };
  let startStep: number;
  try {
    startStep = options.resume === '' ? 0 : await restoreShard(options.resume, held, params, optimizer, false);
    await sharedWeights.synchronizeValues(params);
  } catch (error) {
    releaseStage();
    throw error;
  }
  const sharedWeightActor = sharedWeights.parameterNames.length > 0 ? new SharedWeightActor(options.system, rank, sharedWeights) : undefined;
  const nonFinite = new NonFiniteGuard(config.nonFinite, rank === 0 ? log : undefined);
  const executor = new PipelineStepExecutor({
    config,
    totalSteps: options.totalSteps,
    dataset: options.dataset,
    validation: options.validation,
    sampler: globalBatchSampler(config, options.dataset.numSamples),
    stage,
    params,
    optimizer,
    sharedWeights: sharedWeightActor ?? sharedWeights,
    dataParallel: { rank: dp, size: grid.data, allReduce: (values: Float32Array) => dpGroup.allReduce(values, 'sum', { inPlace: true }) },
    trace,
    modelParallelGroup,
    countsInNorm: (name: string) => stage.countsInNorm(name),
    mixedPrecision,
    // Every rank decides alike from the same reduced values; rank 0 tells.
    nonFinite,
  });
  const stageActor = new StageActor({
    system: options.system,
    remote: options.remote,
    rank,
    replica: dp,
    executor,
    expected: stageActionsOfStep(config, grid.pipeline)[pp],
    ...(options.validation === undefined
      ? {}
      : { expectedEvaluation: lowerEvaluationActions(config.numChunks, evaluationMicroBatchCount(config, options.validation.numSamples), config.numMicroBatches) }),
    firstStep: startStep,
    ...(config.schedule === 'auto-zb'
      ? { adopt: { kind: config.schedule, stages: grid.pipeline, microBatches: config.numMicroBatches, chunks: config.numChunks, lower: (schedule) => lowerStageOfSchedule(config, schedule, pp) } }
      : {}),
    actionTimeoutMs: options.actionTimeoutMs,
    log,
  });
  // Bubble = the part of the pipeline phase (first op to last op of a step) this stage spends not computing.
  const bubbles: { step: number; bubble: number }[] = [];

  return {
    startStep,
    async runStep(step) {
      const result = await stageActor.runStep(step);
      if (result.skipped && result.nonFinite === undefined && rank === 0) {
        log(`step ${step + 1}: gradients overflowed at loss scale ${result.lossScale}: update skipped, scale now ${mixedPrecision!.scaler.scale}`);
      }
      const phase = trace.events.filter((e) => e.ph === 'X' && e.cat === 'compute' && e.name !== 'optimizer step' && e.args?.step === step + 1);
      if (phase.length > 0) {
        const first = Math.min(...phase.map((e) => e.ts));
        const last = Math.max(...phase.map((e) => e.ts + (e.dur ?? 0)));
        bubbles.push({ step, bubble: 1 - (stage.stepComputeMs * 1000) / Math.max(last - first, 1) });
      }
      trace.flush();
      return result;
    },
    evaluate: (step) => stageActor.runEvaluation(step),
    writeShard: (folder, completedSteps) => stageActor.between(`save checkpoint of step ${completedSteps}`, () => writeShard(folder, rank, completedSteps, held, params, optimizer)),
    statuses: () => [stageActor.status(), ...(sharedWeightActor === undefined ? [] : [sharedWeightActor.status()])],
    async finish() {
      const skippedLine = nonFinite.summary();
      if (skippedLine !== undefined && rank === 0) log(skippedLine);
      // The first step pays one-time costs (kernel warm-up, heap growth): measure from the second on;
      // an auto-zb job from the step its own order began.
      const adopted = stageActor.adopted;
      const since = adopted === undefined ? [] : bubbles.filter((b) => b.step >= adopted.fromStep);
      const measured = since.length > 0 ? since : bubbles.length > 1 ? bubbles.slice(1) : bubbles;
      if (measured.length > 0) {
        const mean = measured.reduce((sum, b) => sum + b.bubble, 0) / measured.length;
        const theory = theoreticalBubbleOf(config.schedule, grid.pipeline, config.numMicroBatches, config.numChunks);
        const auto =
          config.schedule !== 'auto-zb'
            ? ''
            : adopted === undefined
              ? '; auto-zb ran zb-h1 throughout (the job ended before its op times were measured)'
              : `; auto-zb order from step ${adopted.fromStep + 1}, simulated bubble ${simulatedBubble(adopted.schedule, adopted.costs).toFixed(3)} with the measured op times (${describeCosts(adopted.costs)})`;
        log(`stage ${pp}: measured bubble ${mean.toFixed(3)}, theoretical ${theory.toFixed(3)} (${config.schedule}, p=${grid.pipeline}, m=${config.numMicroBatches}, chunks=${config.numChunks})${auto}`);
      }
      trace.flush();
      const tied = params.get(WORD_EMBEDDING);
      if (tied !== undefined && grid.pipeline > 1) {
        // Lets a person (and the tests) see that the SharedWeight copies ended bit-identical.
        const values = await readTensor(tied);
        const bytes = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
        log(`tied word embedding sha256 ${createHash('sha256').update(bytes).digest('hex')}`);
      }
    },
    abort() {
      stageActor.stop();
      closeGroups();
    },
    dispose() {
      stageActor.stop();
      sharedWeightActor?.stop();
      releaseStage();
    },
  };
}

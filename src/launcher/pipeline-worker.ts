/**
 * Implements: the training loop of a rank in a pipeline-parallel job: its stage (chunks of layers),
 * its process groups (the pipeline for activations, data parallel for gradients, the embedding group
 * for the tied weights), and per step the ops the scheduler sent with the gate's answer.
 */
import { createHash } from 'node:crypto';
import type { Bus } from '../comm/bus.ts';
import { ProcessGroup } from '../comm/collectives.ts';
import type { StepGoMessage } from '../comm/messages.ts';
import type { TrainConfig } from '../config/types.ts';
import type { TokenizedDataset } from '../dataset/webtext.ts';
import { WORD_EMBEDDING } from '../model/params.ts';
import type { ParallelGrid } from '../parallel/grid.ts';
import { partitionForRun } from '../scheduler/run-partition.ts';
import { SharedWeights } from '../shared-weights/shared-weights.ts';
import { runPipelineStep } from '../stages/pipeline-step.ts';
import { PipelineStage } from '../stages/stage.ts';
import { TraceRecorder } from '../stages/trace.ts';
import { theoreticalBubble } from '../scheduler/measure.ts';
import type * as tf from '../tf.ts';
import { globalBatchSampler } from '../train/global-batch.ts';
import { DynamicLossScaler } from '../train/loss-scaler.ts';
import { NonFiniteGuard } from '../train/non-finite.ts';
import { AdamOptimizer } from '../train/optimizer.ts';
import { restoreShard, writeShard } from '../train/checkpointing.ts';
import { paramsForRank } from '../model/sharding.ts';
import type { RankFileRecord } from '../checkpoint/index.ts';

export interface PipelineWorkerOptions {
  config: TrainConfig;
  grid: ParallelGrid;
  rank: number;
  bus: Bus;
  dataset: TokenizedDataset;
  totalSteps: number;
  log: (line: string) => void;
  /** Asks the coordinator whether to run `step`; the answer carries this stage's ops. */
  gate: (step: number) => Promise<StepGoMessage>;
  /** Where this rank's part of trace.json goes. */
  outDir: string;
  /** A verified checkpoint folder to start from ('' for a fresh start). */
  resume: string;
  /** Hands the worker the function that writes this rank's checkpoint shard. */
  setShardWriter: (writer: (folder: string, completedSteps: number) => Promise<RankFileRecord>) => void;
  /** After each step: 1-based step, this rank's view of the loss (the global mean on the last stage). */
  onStep: (result: { step: number; loss: number; gradNorm: number; stepMs: number; samples: number }) => void;
}

export async function trainPipelineRank(options: PipelineWorkerOptions): Promise<void> {
  const { config, grid, rank, bus, log } = options;
  const { pp, dp, tp } = grid.coordinates(rank);
  const group = (name: string, ranks: number[]) => new ProcessGroup({ bus, name, ranks, rank, log });
  const pipelineGroup = group(grid.groupName('pp', rank), grid.pipelineGroup(rank));
  const dpGroup = group(grid.groupName('dp', rank), grid.dataGroup(rank));
  const tensorGroup = group(grid.groupName('tp', rank), grid.tensorGroup(rank));
  const modelParallelGroup = group(grid.groupName('tp-pp', rank), grid.group('tp-pp', rank));
  const sharedWeights = new SharedWeights();
  const groups = [pipelineGroup, dpGroup, tensorGroup, modelParallelGroup];
  if (grid.inEmbeddingGroup(rank) && grid.pipeline > 1) {
    const embeddingGroup = group(grid.embeddingGroupName(rank), grid.embeddingGroup(rank));
    sharedWeights.register(embeddingGroup, [WORD_EMBEDDING]);
    groups.push(embeddingGroup);
  }
  // A NATS publish before the peer has subscribed is lost: meet every member once before any message.
  for (const g of groups) await g.ready();

  const layers = partitionForRun(config)[pp];
  log(`stage ${pp}: layers ${layers.map(([start, end]) => `[${start}, ${end})`).join(' ')}`);
  const trace = new TraceRecorder(rank, `rank ${rank}: stage ${pp}${grid.tensor > 1 ? `, shard ${tp}` : ''}${grid.data > 1 ? `, replica ${dp}` : ''}`);
  const stage = new PipelineStage({
    config,
    pipelineRank: pp,
    pipelineSize: grid.pipeline,
    chunkLayers: layers,
    pipelineGroup,
    stageRanks: grid.pipelineGroup(rank),
    trace,
    tensorGroup,
    halfPrecisionWire: config.fp16 !== undefined,
  });
  let mixedPrecision: { scaler: DynamicLossScaler; worldGroup: ProcessGroup } | undefined;
  if (config.fp16 !== undefined) {
    const worldGroup = group('world', Array.from({ length: grid.world }, (_, r) => r));
    await worldGroup.ready();
    groups.push(worldGroup);
    mixedPrecision = { scaler: new DynamicLossScaler(config.fp16), worldGroup };
  }
  const params = new Map<string, tf.Variable>();
  for (const set of stage.parameterSets()) for (const [name, variable] of set) params.set(name, variable);
  const optimizer = new AdamOptimizer(config.optimizer);
  const held = paramsForRank(config.model, { layerRanges: layers, tp: grid.tensor, tpRank: tp });
  const startStep = options.resume === '' ? 0 : await restoreShard(options.resume, held, params, optimizer, false);
  await sharedWeights.synchronizeValues(params);
  options.setShardWriter((folder, completedSteps) => writeShard(folder, rank, completedSteps, held, params, optimizer));
  const sampler = globalBatchSampler(config, options.dataset.numSamples);
  const context = {
    config,
    dataset: options.dataset,
    sampler,
    stage,
    params,
    optimizer,
    sharedWeights,
    dataParallel: { rank: dp, size: grid.data, allReduce: (values: Float32Array) => dpGroup.allReduce(values, 'sum', { inPlace: true }) },
    trace,
    modelParallelGroup,
    countsInNorm: (name: string) => stage.countsInNorm(name),
    mixedPrecision,
    // Every rank decides alike from the same reduced values; rank 0 tells.
    nonFinite: new NonFiniteGuard(config.nonFinite, rank === 0 ? log : undefined),
  };
  // Bubble = the part of the pipeline phase (first op to last op of a step) this stage spends not computing.
  const bubbles: number[] = [];
  try {
    for (let step = startStep; ; step++) {
      const go = await options.gate(step);
      if (go.action === 'stop' || step >= options.totalSteps) break;
      if (go.ops === undefined) throw new Error(`the scheduler sent no pipeline ops for step ${step + 1}`);
      const started = performance.now();
      const ops = go.ops.map(([kind, microBatch, chunk]) => ({ kind, microBatch, chunk }));
      const result = await runPipelineStep(context, step, ops);
      if (result.skipped && result.nonFinite === undefined && rank === 0) {
        log(`step ${step + 1}: gradients overflowed at loss scale ${result.lossScale}: update skipped, scale now ${mixedPrecision!.scaler.scale}`);
      }
      const phase = trace.events.filter((e) => e.ph === 'X' && e.cat === 'compute' && e.name !== 'optimizer step' && e.args?.step === step + 1);
      if (phase.length > 0) {
        const first = Math.min(...phase.map((e) => e.ts));
        const last = Math.max(...phase.map((e) => e.ts + (e.dur ?? 0)));
        bubbles.push(1 - (stage.stepComputeMs * 1000) / Math.max(last - first, 1));
      }
      options.onStep({ step: step + 1, loss: result.loss, gradNorm: result.gradNorm, stepMs: performance.now() - started, samples: result.samples });
    }
    const skippedLine = context.nonFinite.summary();
    if (skippedLine !== undefined && rank === 0) log(skippedLine);
    // The first step pays one-time costs (kernel warm-up, heap growth): measure from the second on.
    const measured = bubbles.length > 1 ? bubbles.slice(1) : bubbles;
    if (measured.length > 0) {
      const mean = measured.reduce((a, b) => a + b, 0) / measured.length;
      const theory = theoreticalBubble(grid.pipeline, config.numMicroBatches, config.numChunks);
      log(`stage ${pp}: measured bubble ${mean.toFixed(3)}, theoretical ${theory.toFixed(3)} (${config.schedule}, p=${grid.pipeline}, m=${config.numMicroBatches}, chunks=${config.numChunks})`);
    }
    trace.writePart(options.outDir);
    const tied = params.get(WORD_EMBEDDING);
    if (tied !== undefined && grid.pipeline > 1) {
      // Lets a person (and the tests) see that the SharedWeight copies ended bit-identical.
      const values = tied.dataSync() as Float32Array;
      const bytes = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
      log(`tied word embedding sha256 ${createHash('sha256').update(bytes).digest('hex')}`);
    }
  } finally {
    stage.dispose();
    optimizer.dispose();
    for (const g of groups) g.close();
  }
}

/**
 * Test helpers: P pipeline stages (x dp replicas) in one process over the in-process transport, and
 * the small model and token data the stage tests train.
 */
import { Bus } from '../../src/comm/bus.ts';
import { ProcessGroup } from '../../src/comm/collectives.ts';
import { LocalNetwork } from '../../src/comm/local-transport.ts';
import type { TrainConfig } from '../../src/config/types.ts';
import { globalBatchSampler } from '../../src/train/global-batch.ts';
import type { TokenizedDataset } from '../../src/dataset/webtext.ts';
import { WORD_EMBEDDING } from '../../src/model/params.ts';
import { ParallelGrid } from '../../src/parallel/grid.ts';
import { partitionForRun } from '../../src/parallel/run-partition.ts';
import { SharedWeights } from '../../src/shared-weights/shared-weights.ts';
import type { PipelineOp } from '../../src/scheduler/ops.ts';
import { lossStageOf, placementOf, tiedWeightCrossesStages } from '../../src/scheduler/placement.ts';
import { lowerStageOps, tiedChunksOf } from '../../src/scheduler/actions.ts';
import { wirePrecisionOf } from '../../src/comm/tensor-wire.ts';
import { PipelineStepExecutor, type PipelineStepContext, type PipelineStepResult } from '../../src/stages/pipeline-step.ts';
import { PipelineStage } from '../../src/stages/stage.ts';
import type { TraceRecorder } from '../../src/trace/trace.ts';
import type * as tf from '../../src/tf.ts';
import { DynamicLossScaler } from '../../src/train/loss-scaler.ts';
import { AdamOptimizer } from '../../src/train/optimizer.ts';
import { resolveTinyConfig } from '../support/tiny-train-config.ts';

/** Sequence length of the stage tests' data. */
export const STAGE_TEST_SEQ_LEN = 8;

/** 32 samples of 8 ids below 23, every sample different; `stride` varies the data between test files. */
export function stageTestDataset(stride: number): TokenizedDataset {
  const numSamples = 32;
  const inputIds = new Int32Array(numSamples * STAGE_TEST_SEQ_LEN);
  for (let i = 0; i < inputIds.length; i++) inputIds[i] = (i * stride + Math.floor(i / STAGE_TEST_SEQ_LEN)) % 23;
  return { inputIds, attentionMask: new Uint8Array(inputIds.length).fill(1), numSamples, seqLen: STAGE_TEST_SEQ_LEN };
}

/** A GPT of `numLayers` blocks of width 16 over a 24-word vocabulary, trained 3 steps, with `overrides`. */
export function stageTestConfig(numLayers: number, seed: number, overrides: Record<string, unknown>): TrainConfig {
  const model = { numLayers, hiddenSize: 16, numAttentionHeads: 2, maxPositionEmbeddings: 16 };
  return resolveTinyConfig({ model, seqLen: STAGE_TEST_SEQ_LEN, steps: 3, seed, vocabSize: 24 }, overrides);
}

export interface PipelineRun {
  losses: number[];
  /** Final word-embedding values of each rank that holds one, by rank. */
  embeddings: Map<number, Float32Array>;
  /** Per step, per rank: whether fp16 mode skipped the update. */
  skipped: boolean[][];
}

/** One whole step of a stage without actors: its ops lowered as the scheduler lowers them, run in order. */
async function runStep(context: PipelineStepContext, step: number, ops: PipelineOp[], placement: { pp: number; pipeline: number }): Promise<PipelineStepResult> {
  const { config, stage } = context;
  const tiedChunks = context.sharedWeights.parameterNames.length === 0 ? [] : tiedChunksOf(placement.pp, placement.pipeline, stage.chunks.length, placementOf(config.schedule));
  const executor = new PipelineStepExecutor(context);
  executor.begin(step);
  let result: PipelineStepResult | undefined;
  for (const action of lowerStageOps(ops, config.numMicroBatches, { accumulation: config.gradientAccumulation, tiedChunks })) result = await executor.execute(action);
  return result!;
}

export async function runPipeline(
  config: TrainConfig,
  dataset: TokenizedDataset,
  steps: number,
  opsFor: (pipelineRank: number) => PipelineOp[],
  options: { trace?: (rank: number) => TraceRecorder; sharedWeights?: () => SharedWeights; gradientBucketBytes?: number } = {},
): Promise<PipelineRun> {
  const grid = new ParallelGrid({ data: config.parallel.data, pipeline: config.parallel.pipeline, tensor: config.parallel.tensor.size });
  const network = new LocalNetwork(64 * 1024);
  const partition = partitionForRun(config);
  const sampler = globalBatchSampler(config, dataset.numSamples);
  const ranks = Array.from({ length: grid.world }, (_, rank) => {
    const bus = new Bus({ jobId: 'pipe', transport: network.connect(), log: () => {} });
    const { pp, dp } = grid.coordinates(rank);
    const pipelineGroup = new ProcessGroup({ bus, name: grid.groupName('pp', rank), ranks: grid.pipelineGroup(rank), rank, timeoutMs: 20_000 });
    const dpGroup = new ProcessGroup({ bus, name: grid.groupName('dp', rank), ranks: grid.dataGroup(rank), rank, timeoutMs: 20_000 });
    const tensorGroup = new ProcessGroup({ bus, name: grid.groupName('tp', rank), ranks: grid.tensorGroup(rank), rank, timeoutMs: 20_000 });
    const modelParallelGroup = new ProcessGroup({ bus, name: grid.groupName('tp-pp', rank), ranks: grid.group('tp-pp', rank), rank, timeoutMs: 20_000 });
    const trace = options.trace?.(rank);
    const stage = new PipelineStage({ config, pipelineRank: pp, pipelineSize: grid.pipeline, chunkLayers: partition[pp], pipelineGroup, stageRanks: grid.pipelineGroup(rank), tensorGroup, wirePrecision: wirePrecisionOf(config), trace, placement: placementOf(config.schedule) });
    const mixedPrecision =
      config.fp16 === undefined
        ? undefined
        : { scaler: new DynamicLossScaler(config.fp16), worldGroup: new ProcessGroup({ bus, name: 'world', ranks: Array.from({ length: grid.world }, (_, r) => r), rank, timeoutMs: 20_000 }) };
    const params = new Map<string, tf.Variable>();
    for (const set of stage.parameterSets()) for (const [name, variable] of set) params.set(name, variable);
    const sharedWeights = options.sharedWeights?.() ?? new SharedWeights();
    if (grid.inEmbeddingGroup(rank) && tiedWeightCrossesStages(grid.pipeline, config.numChunks, placementOf(config.schedule))) {
      sharedWeights.register(new ProcessGroup({ bus, name: grid.embeddingGroupName(rank), ranks: grid.embeddingGroup(rank), rank, timeoutMs: 20_000 }), [WORD_EMBEDDING]);
    }
    const dataParallel = { rank: dp, size: grid.data, allReduce: (values: Float32Array) => dpGroup.allReduce(values, 'sum') };
    return { rank, bus, stage, params, sharedWeights, trace, optimizer: new AdamOptimizer(config.optimizer), dataParallel, pp, modelParallelGroup, mixedPrecision };
  });
  const losses: number[] = [];
  const skipped: boolean[][] = [];
  for (let step = 0; step < steps; step++) {
    const results = await Promise.all(
      ranks.map((r) =>
        runStep(
          { config, totalSteps: steps, dataset, sampler, stage: r.stage, params: r.params, optimizer: r.optimizer, sharedWeights: r.sharedWeights, dataParallel: r.dataParallel, modelParallelGroup: r.modelParallelGroup, countsInNorm: (name) => r.stage.countsInNorm(name), mixedPrecision: r.mixedPrecision, trace: r.trace, gradientBucketBytes: options.gradientBucketBytes },
          step,
          opsFor(r.pp),
          { pp: r.pp, pipeline: grid.pipeline },
        ),
      ),
    );
    losses.push(results[grid.rankOf({ dp: 0, pp: lossStageOf(grid.pipeline, config.numChunks, placementOf(config.schedule)), tp: 0 })].loss);
    skipped.push(results.map((result) => result.skipped === true));
  }
  const embeddings = new Map<number, Float32Array>();
  for (const r of ranks) {
    const embedding = r.params.get(WORD_EMBEDDING);
    if (embedding !== undefined) embeddings.set(r.rank, embedding.dataSync() as Float32Array);
    r.stage.dispose();
    r.optimizer.dispose();
    await r.bus.close();
  }
  return { losses, embeddings, skipped };
}

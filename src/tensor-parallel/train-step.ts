/**
 * Implements: one optimizer step of a tensor-parallel rank holding the whole model's layers (tp alone,
 * or tp x dp): the same arithmetic as the single-process Trainer (gradients and losses summed over
 * micro-batches, scaled once by 1 / (micro-batches x accumulation rounds x dp)), with the global
 * gradient norm taken over the group: sharded gradients' squares are summed across tp, replicated ones
 * (identical on every rank) counted once. Clipping is applied here with the Trainer's formula, so the
 * optimizer's own clip (which sees only this rank's shards) never fires a second time.
 */
import type { TrainConfig } from '../config/types.ts';
import { gatherBatch, microBatches, rankSlice, type BatchSampler } from '../dataset/sampler.ts';
import type { TokenizedDataset } from '../dataset/webtext.ts';
import type { TokenBatch } from '../model/gpt.ts';
import { addGradient } from '../model/gradient-sum.ts';
import * as tf from '../tf.ts';
import { averageOverGlobalBatch } from '../train/gradient-reduction.ts';
import type { AdamOptimizer } from '../train/optimizer.ts';
import type { DataParallelRole } from '../train/trainer.ts';
import type { TensorParallelGroup } from './segment-chain.ts';
import type { TensorParallelGPT } from './tensor-parallel-gpt.ts';

export interface TensorParallelStepContext {
  config: TrainConfig;
  dataset: TokenizedDataset;
  sampler: BatchSampler;
  model: TensorParallelGPT;
  optimizer: AdamOptimizer;
  group: TensorParallelGroup;
  /** Omitted: no data parallelism (dp = 1). */
  dataParallel?: DataParallelRole;
}

export interface TensorParallelStepResult {
  loss: number;
  /** Global L2 norm of the full model's gradient, before clipping. */
  gradNorm: number;
  samples: number;
}

export async function tensorParallelTrainStep(context: TensorParallelStepContext, step: number): Promise<TensorParallelStepResult> {
  const { config, dataset, sampler, model, optimizer, group } = context;
  const dp = context.dataParallel ?? { rank: 0, size: 1, allReduce: async (values: Float32Array) => values };
  if (dp.size !== config.parallel.data) throw new Error(`data-parallel role of size ${dp.size} but the config says parallel.data=${config.parallel.data}`);
  const globalBatch = sampler.globalBatch(step);
  const gradSums = new Map<string, tf.Tensor>();
  let lossSum = 0;
  for (let accumIndex = 0; accumIndex < config.gradientAccumulation; accumIndex++) {
    const indices = rankSlice(globalBatch, { dp: dp.size, dpRank: dp.rank, gradientAccumulation: config.gradientAccumulation, accumIndex });
    for (const sampleIds of microBatches(indices, config.numMicroBatches)) {
      const batch: TokenBatch = { ...gatherBatch(dataset, sampleIds), sampleIds };
      const { loss, grads } = await model.lossAndGradients(batch);
      lossSum += loss;
      for (const [name, grad] of grads) addGradient(gradSums, name, grad);
    }
  }
  const names = model.specs.map((spec) => spec.name);
  const scale = 1 / (config.numMicroBatches * config.gradientAccumulation * dp.size);
  const means = await averageOverGlobalBatch(names, gradSums, lossSum, scale, dp.size > 1 ? (values) => dp.allReduce(values) : undefined);
  const meanGrads = means.grads;
  const gradNorm = await tensorParallelGradNorm(group, model, meanGrads);
  const { gradClip } = config.optimizer;
  if (gradClip > 0 && gradNorm > gradClip) {
    const clipScale = gradClip / (gradNorm + 1e-6);
    for (const [name, grad] of meanGrads) {
      meanGrads.set(name, tf.mul(grad, clipScale));
      grad.dispose();
    }
  }
  optimizer.apply(model.params, meanGrads);
  for (const grad of meanGrads.values()) grad.dispose();
  return { loss: means.loss, gradNorm, samples: globalBatch.length };
}

/**
 * L2 norm of the full model's gradient from this rank's shards: the sharded parameters' squares summed
 * over the tp group, plus the replicated ones' once (every rank holds the same replicated gradient).
 */
export async function tensorParallelGradNorm(group: TensorParallelGroup, model: TensorParallelGPT, grads: Map<string, tf.Tensor>): Promise<number> {
  let sharded = 0;
  let replicated = 0;
  for (const spec of model.specs) {
    const grad = grads.get(spec.name);
    if (grad === undefined) throw new Error(`tensor-parallel grad norm: no gradient for ${spec.name}`);
    const squares = tf.tidy(() => tf.sum(tf.square(grad)));
    const value = squares.dataSync()[0];
    squares.dispose();
    if (model.shardKind(spec.name) === 'replicated') replicated += value;
    else sharded += value;
  }
  const total = group.size === 1 ? sharded : (await group.allReduce(new Float32Array([sharded]), 'sum'))[0];
  return Math.sqrt(total + replicated);
}

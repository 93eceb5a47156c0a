/**
 * Implements: the achieved model FLOP/s of a single-process training step (forward, backward, Adam)
 * on the current backend, for a GPT built from random tokens (the data path is not what is measured).
 */
import * as tf from '../src/tf.ts';
import { resolveModelConfig, type ModelConfigInput } from '../src/model/config.ts';
import { GPT, type TokenBatch } from '../src/model/gpt.ts';
import { modelLossAndGrads } from '../src/model/manual/slice.ts';
import { fullModelSlice } from '../src/model/params.ts';
import { modelFlopsPerStep } from '../src/model/flops.ts';
import { AdamOptimizer } from '../src/train/optimizer.ts';

export interface StepBenchOptions {
  model: ModelConfigInput;
  batchSize: number;
  seqLen: number;
  warmup?: number;
  runs?: number;
  onProgress?: (line: string) => void;
}

export interface StepBenchResult {
  stepMs: number;
  stepGflops: number;
  flopsPerStep: number;
  /** Change of tf.memory().numTensors between the first and the last timed step. */
  tensorGrowth: number;
}

/** A batch of spread-out GPT-2 token ids with no padding: what is measured is compute, not data. */
export function benchBatch(batchSize: number, seqLen: number): TokenBatch {
  const inputIds = new Int32Array(batchSize * seqLen);
  for (let i = 0; i < inputIds.length; i++) inputIds[i] = (i * 2654435761) % 50257;
  return {
    inputIds,
    attentionMask: new Uint8Array(inputIds.length).fill(1),
    batch: batchSize,
    seqLen,
    sampleIds: Int32Array.from({ length: batchSize }, (_, i) => i),
  };
}

export async function measureTrainingStep(options: StepBenchOptions): Promise<StepBenchResult> {
  const config = resolveModelConfig(options.model);
  const { batchSize, seqLen } = options;
  const model = new GPT(config, fullModelSlice(config), 1);
  const optimizer = new AdamOptimizer({ kind: 'adam', lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, gradClip: 0 });
  const batch = benchBatch(batchSize, seqLen);
  // The trainer's path: the hand-written backward with saved activations.
  const step = async () => {
    const { loss, grads } = modelLossAndGrads(model, batch);
    await optimizer.apply(model.params, grads);
    await loss.data();
    loss.dispose();
    for (const grad of grads.values()) grad.dispose();
  };
  const warmup = options.warmup ?? 1;
  const runs = options.runs ?? 3;
  for (let i = 0; i < warmup; i++) await step();
  const tensorsBefore = tf.memory().numTensors;
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const start = performance.now();
    await step();
    times.push(performance.now() - start);
    options.onProgress?.(`  step ${i + 1}/${runs}: ${times[i].toFixed(0)} ms`);
  }
  const tensorGrowth = tf.memory().numTensors - tensorsBefore;
  optimizer.dispose();
  model.dispose();
  times.sort((a, b) => a - b);
  const stepMs = times[Math.floor(times.length / 2)];
  const flopsPerStep = modelFlopsPerStep(config, seqLen, batchSize * seqLen);
  return { stepMs, stepGflops: flopsPerStep / stepMs / 1e6, flopsPerStep, tensorGrowth };
}

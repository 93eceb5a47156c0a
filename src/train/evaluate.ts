/**
 * Implements: a model's loss and perplexity on a tokenized dataset, in eval mode (no dropout, no
 * gradients): the training objective (the mean next-token cross-entropy over a batch's rows, GPT.loss),
 * averaged over the evaluated batches weighted by their rows, and perplexity = exp(loss).
 * Samples are taken in file order, so every evaluation of one dataset sees the same ones.
 */
import * as tf from '../tf.ts';
import type { GPT } from '../model/gpt.ts';
import { gatherBatch } from '../dataset/sampler.ts';
import type { TokenizedDataset } from '../dataset/webtext.ts';
import { readScalar } from '../backend/tensor-view.ts';

export interface EvaluateOptions {
  batchSize: number;
  /** Batches at most; undefined: every sample (the last batch may be smaller). */
  maxBatches?: number;
  onProgress?: (done: number, total: number) => void;
}

export interface Evaluation {
  loss: number;
  perplexity: number;
  samples: number;
  batches: number;
}

export async function evaluateLoss(model: GPT, dataset: TokenizedDataset, options: EvaluateOptions): Promise<Evaluation> {
  if (!(Number.isInteger(options.batchSize) && options.batchSize >= 1)) throw new Error(`evaluateLoss: batchSize must be a positive integer, got ${options.batchSize}`);
  if (dataset.seqLen < 2) throw new Error('evaluateLoss: samples need at least 2 tokens (one position predicts the next)');
  const all = Math.ceil(dataset.numSamples / options.batchSize);
  const batches = Math.min(all, options.maxBatches ?? all);
  if (batches === 0) throw new Error('evaluateLoss: the dataset has no samples');
  let weighted = 0;
  let rows = 0;
  let samples = 0;
  for (let index = 0; index < batches; index++) {
    const first = index * options.batchSize;
    const sampleIds = Int32Array.from({ length: Math.min(options.batchSize, dataset.numSamples - first) }, (_, i) => first + i);
    const batch = { ...gatherBatch(dataset, sampleIds), sampleIds };
    const loss = tf.tidy(() => model.loss(batch));
    try {
      const batchRows = batch.batch * (batch.seqLen - 1);
      weighted += (await readScalar(loss)) * batchRows;
      rows += batchRows;
      samples += batch.batch;
    } finally {
      loss.dispose();
    }
    options.onProgress?.(index + 1, batches);
  }
  const loss = weighted / rows;
  return { loss, perplexity: Math.exp(loss), samples, batches };
}

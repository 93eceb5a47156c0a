/**
 * Implements: the batch order of a training run, and how one global batch is cut up among data-parallel ranks,
 * gradient-accumulation rounds and pipeline micro-batches.
 *
 * [Note: the global batch rule] With the same seed, optimizer step k (0-based within the run, counting across
 * epochs) uses the same global batch of sample indices whatever the parallel layout. The global batch size is
 * G = batchSize x dp x gradientAccumulation; only G enters BatchSampler, so any (dp, gradientAccumulation)
 * split of the same G sees the same samples at every step, which is what lets every layout's losses be
 * compared with the single-process reference.
 *
 * [Note: slice order] A global batch is read as a [gradientAccumulation][dp][batchSize] array: accumulation
 * round a, dp rank r uses the contiguous block starting at (a*dp + r)*batchSize. Within that block, micro-batch
 * m is again contiguous. So the ranks of one round together hold a contiguous stretch of the global batch.
 *
 * [Note: the last batch of an epoch] With dropLast (the seed's choice) the N mod G samples left at the end of
 * an epoch's permutation are not used that epoch. Without dropLast the epoch has ceil(N/G) steps and the last
 * global batch is filled to full size by wrapping around to the start of the SAME epoch's permutation
 * (position p reads perm[p mod N]). Every batch therefore has G samples, so tensor shapes never change; the
 * price is that a few samples are seen twice in that epoch.
 */
import type { TokenizedDataset } from './webtext.ts';
import { epochPermutation } from './shuffle.ts';

export interface BatchSamplerOptions {
  numSamples: number;
  globalBatchSize: number;
  seed: number;
  /** false: every epoch visits samples in file order. */
  shuffle?: boolean;
  dropLast?: boolean;
}

export class BatchSampler {
  readonly numSamples: number;
  readonly globalBatchSize: number;
  readonly seed: number;
  readonly shuffle: boolean;
  readonly dropLast: boolean;
  readonly stepsPerEpoch: number;
  private cachedEpoch = -1;
  private cachedPermutation: Int32Array = new Int32Array(0);

  constructor(options: BatchSamplerOptions) {
    const { numSamples, globalBatchSize, seed, shuffle = true, dropLast = true } = options;
    if (!Number.isInteger(numSamples) || numSamples < 1) throw new RangeError(`BatchSampler: numSamples must be a positive integer, got ${numSamples}`);
    if (!Number.isInteger(globalBatchSize) || globalBatchSize < 1) {
      throw new RangeError(`BatchSampler: globalBatchSize must be a positive integer, got ${globalBatchSize}`);
    }
    if (dropLast && globalBatchSize > numSamples) {
      throw new RangeError(
        `BatchSampler: the dataset has ${numSamples} samples, fewer than one global batch of ${globalBatchSize} ` +
          `(batchSize x dp x gradientAccumulation) with dropLast, so an epoch would have no step. ` +
          `Use more data, a smaller batch, or dropLast=false.`,
      );
    }
    this.numSamples = numSamples;
    this.globalBatchSize = globalBatchSize;
    this.seed = seed;
    this.shuffle = shuffle;
    this.dropLast = dropLast;
    this.stepsPerEpoch = dropLast ? Math.floor(numSamples / globalBatchSize) : Math.ceil(numSamples / globalBatchSize);
    // Validates the seed now rather than at the first step.
    if (shuffle) epochPermutation(1, seed, 0);
  }

  epochOf(step: number): number {
    checkStep(step);
    return Math.floor(step / this.stepsPerEpoch);
  }

  /** Index of `step` within its epoch. */
  stepInEpoch(step: number): number {
    checkStep(step);
    return step % this.stepsPerEpoch;
  }

  /** The order of samples in `epoch` (identity without shuffle). Do not modify: it is cached. */
  permutation(epoch: number): Int32Array {
    if (epoch !== this.cachedEpoch) {
      this.cachedPermutation = this.shuffle ? epochPermutation(this.numSamples, this.seed, epoch) : identity(this.numSamples);
      this.cachedEpoch = epoch;
    }
    return this.cachedPermutation;
  }

  /** The G sample indices of optimizer step `step` (0-based, counting across epochs). */
  globalBatch(step: number): Int32Array {
    const order = this.permutation(this.epochOf(step));
    const start = this.stepInEpoch(step) * this.globalBatchSize;
    const batch = new Int32Array(this.globalBatchSize);
    for (let i = 0; i < batch.length; i++) batch[i] = order[(start + i) % this.numSamples];
    return batch;
  }
}

export interface RankSliceOptions {
  dp: number;
  dpRank: number;
  gradientAccumulation: number;
  accumIndex: number;
}

/** The batchSize indices dp rank `dpRank` uses in accumulation round `accumIndex` (see "slice order"). */
export function rankSlice(globalBatch: Int32Array, options: RankSliceOptions): Int32Array {
  const { dp, dpRank, gradientAccumulation, accumIndex } = options;
  checkCount('dp', dp);
  checkCount('gradientAccumulation', gradientAccumulation);
  checkIndex('dpRank', dpRank, dp);
  checkIndex('accumIndex', accumIndex, gradientAccumulation);
  const ranksTimesRounds = dp * gradientAccumulation;
  if (globalBatch.length % ranksTimesRounds !== 0) {
    throw new RangeError(
      `rankSlice: a global batch of ${globalBatch.length} does not split into dp=${dp} x gradientAccumulation=${gradientAccumulation} equal parts`,
    );
  }
  const batchSize = globalBatch.length / ranksTimesRounds;
  const start = (accumIndex * dp + dpRank) * batchSize;
  return globalBatch.slice(start, start + batchSize);
}

/** Splits a rank's batch into numMicroBatches equal contiguous micro-batches. */
export function microBatches(indices: Int32Array, numMicroBatches: number): Int32Array[] {
  checkCount('numMicroBatches', numMicroBatches);
  if (indices.length % numMicroBatches !== 0) {
    throw new RangeError(
      `microBatches: a batch of ${indices.length} samples does not split into ${numMicroBatches} equal micro-batches; ` +
        `make batchSize a multiple of numMicroBatches`,
    );
  }
  const size = indices.length / numMicroBatches;
  return Array.from({ length: numMicroBatches }, (_, m) => indices.slice(m * size, (m + 1) * size));
}

export interface Batch {
  /** batch*seqLen ids, row-major. */
  inputIds: Int32Array;
  /** batch*seqLen, 1 = real token. */
  attentionMask: Uint8Array;
  batch: number;
  seqLen: number;
}

/** Copies the rows `indices` of the dataset, in that order, into one batch. */
export function gatherBatch(dataset: TokenizedDataset, indices: ArrayLike<number>): Batch {
  const { seqLen, numSamples } = dataset;
  const inputIds = new Int32Array(indices.length * seqLen);
  const attentionMask = new Uint8Array(indices.length * seqLen);
  for (let row = 0; row < indices.length; row++) {
    const sample = indices[row];
    if (!Number.isInteger(sample) || sample < 0 || sample >= numSamples) {
      throw new RangeError(`gatherBatch: sample index ${sample} at row ${row} is outside the dataset's [0, ${numSamples})`);
    }
    const from = sample * seqLen;
    inputIds.set(dataset.inputIds.subarray(from, from + seqLen), row * seqLen);
    attentionMask.set(dataset.attentionMask.subarray(from, from + seqLen), row * seqLen);
  }
  return { inputIds, attentionMask, batch: indices.length, seqLen };
}

function identity(n: number): Int32Array {
  const order = new Int32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  return order;
}

function checkStep(step: number): void {
  if (!Number.isSafeInteger(step) || step < 0) throw new RangeError(`step must be a non-negative integer, got ${step}`);
}

function checkCount(name: string, value: number): void {
  if (!Number.isInteger(value) || value < 1) throw new RangeError(`${name} must be a positive integer, got ${value}`);
}

function checkIndex(name: string, value: number, count: number): void {
  if (!Number.isInteger(value) || value < 0 || value >= count) throw new RangeError(`${name} ${value} is outside [0, ${count})`);
}

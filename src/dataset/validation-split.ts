/**
 * Implements: the datasets of a run: the training samples and, where the config asks for validation,
 * the held-out ones: a file of their own (data.validPath) or a share of the training file
 * (data.validFraction).
 *
 * [Note: the held-out share] validFraction f holds out sample i of the file when floor((i + 1) f) >
 * floor(i f): every (1/f)-th sample, spread evenly through the file (a file sorted by source or date
 * gives a validation set of every kind, which Megatron's contiguous tail split does not), decided by the
 * index alone, so every process and every layout holds out the same samples whatever the seed. The
 * training dataset is the other samples, copied out in file order: the batch sampler only ever sees
 * them, so no training batch can contain a held-out sample.
 */
import type { TrainConfig } from '../config/types.ts';
import { loadWebtextDataset, type LoadWebtextOptions, type TokenizedDataset } from './webtext.ts';

export interface RunDatasets {
  train: TokenizedDataset;
  /** Absent: the run evaluates nothing. */
  validation?: TokenizedDataset;
}

export interface ValidationSplit {
  train: TokenizedDataset;
  validation: TokenizedDataset;
  /** The file's sample index of each training sample, and of each held-out one, ascending. */
  trainIndices: Int32Array;
  heldOutIndices: Int32Array;
}

/** Whether sample `index` of a file is held out at fraction `fraction` (see [Note: the held-out share]). */
export function isHeldOut(index: number, fraction: number): boolean {
  return Math.floor((index + 1) * fraction) > Math.floor(index * fraction);
}

export function splitValidation(dataset: TokenizedDataset, fraction: number): ValidationSplit {
  if (!(fraction > 0 && fraction < 1)) throw new RangeError(`data.validFraction must be in (0, 1) to split, got ${fraction}`);
  const held: number[] = [];
  const kept: number[] = [];
  for (let index = 0; index < dataset.numSamples; index++) (isHeldOut(index, fraction) ? held : kept).push(index);
  if (held.length === 0) {
    throw new Error(
      `data.validFraction ${fraction} of ${dataset.numSamples} samples holds out none: raise it to at least ${(1 / dataset.numSamples).toPrecision(2)}, or give data.validPath`,
    );
  }
  if (kept.length === 0) throw new Error(`data.validFraction ${fraction} holds out all ${dataset.numSamples} samples: nothing is left to train on`);
  const heldOutIndices = Int32Array.from(held);
  const trainIndices = Int32Array.from(kept);
  return { train: selectSamples(dataset, trainIndices), validation: selectSamples(dataset, heldOutIndices), trainIndices, heldOutIndices };
}

/** A dataset of the rows `indices` of `dataset`, in that order (copied). */
export function selectSamples(dataset: TokenizedDataset, indices: Int32Array): TokenizedDataset {
  const { seqLen } = dataset;
  const inputIds = new Int32Array(indices.length * seqLen);
  const attentionMask = new Uint8Array(indices.length * seqLen);
  indices.forEach((sample, row) => {
    inputIds.set(dataset.inputIds.subarray(sample * seqLen, (sample + 1) * seqLen), row * seqLen);
    attentionMask.set(dataset.attentionMask.subarray(sample * seqLen, (sample + 1) * seqLen), row * seqLen);
  });
  return { inputIds, attentionMask, numSamples: indices.length, seqLen };
}

/** Loads (or reads from the token cache) the training file and the validation data the config names. */
export async function loadRunDatasets(config: TrainConfig, options: Pick<LoadWebtextOptions, 'log' | 'onProgress'> = {}): Promise<RunDatasets> {
  const load = (path: string) => loadWebtextDataset(path, { seqLen: config.seqLen, skipBadLines: config.data.skipBadLines, ...options });
  const file = await load(config.data.path);
  if (config.data.validPath !== undefined) return { train: file, validation: await load(config.data.validPath) };
  if (config.data.validFraction > 0) {
    const { train, validation } = splitValidation(file, config.data.validFraction);
    options.log?.(`validation: ${validation.numSamples} of the ${file.numSamples} samples held out (data.validFraction ${config.data.validFraction}), ${train.numSamples} left to train on`);
    return { train, validation };
  }
  return { train: file };
}

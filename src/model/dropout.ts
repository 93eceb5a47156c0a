/**
 * Implements: layout-independent dropout masks.
 *
 * A unit is kept or dropped by a counter-based draw keyed by (seed, step, global sample index, layer,
 * site) at the unit's index within that sample's FULL activation, so whichever rank computes a unit,
 * in whichever pipeline/tensor/data layout, it makes the same decision as the single-process run.
 * Masks are built in JS and enter the graph as constants (a mask depending on a variable would have
 * no gradient in tfjs).
 */
import * as tf from '../tf.ts';
import { combineKey, uniformAt } from './rng.ts';

/** Where in the network a dropout is applied; part of the key so sites never share draws. */
export enum DropoutSite {
  Embedding = 0,
  AttentionProbs = 1,
  AttentionOutput = 2,
  MlpOutput = 3,
}

/** The layer number used in keys for the embedding's dropout, which belongs to no block. */
export const EMBEDDING_LAYER = -1;

export interface DropoutContext {
  seed: number;
  /** Optimizer step, 0-based. */
  step: number;
  /** Global dataset index of each sample of the batch, in batch order. */
  sampleIds: Int32Array;
}

/** Keep-mask scaled by 1/(1-rate) (inverted dropout), shaped [batch, ...perSampleShape]. */
export function dropoutMask(
  ctx: DropoutContext,
  rate: number,
  layer: number,
  site: DropoutSite,
  perSampleShape: number[],
): tf.Tensor {
  const perSample = perSampleShape.reduce((a, b) => a * b, 1);
  const batch = ctx.sampleIds.length;
  const values = new Float32Array(batch * perSample);
  const scale = 1 / (1 - rate);
  for (let b = 0; b < batch; b++) {
    const key = combineKey(ctx.seed, ctx.step, ctx.sampleIds[b], layer, site);
    const offset = b * perSample;
    for (let i = 0; i < perSample; i++) values[offset + i] = uniformAt(key, i) >= rate ? scale : 0;
  }
  return tf.tensor(values, [batch, ...perSampleShape], 'float32');
}

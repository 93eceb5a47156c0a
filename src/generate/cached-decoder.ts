/**
 * Implements: decoding with a key/value cache (GPT-2's `past_key_values`): the prompt goes through the
 * model once, each block keeping its keys and values; then every new token costs one position's
 * forward, attending to the kept keys and values, instead of a forward over the whole sequence again.
 * The blocks are GPT.block itself (model/gpt.ts, the tape model every layout is tested against) in eval
 * mode (no dropout), given the cached keys and values, so the logits equal a full forward's at every position.
 */
import * as tf from '../tf.ts';
import type { GPT, KeysAndValues } from '../model/gpt.ts';
import { layerNorm } from '../model/layers.ts';
import { WORD_EMBEDDING } from '../model/params.ts';
import { readTensorCopy } from '../backend/tensor-view.ts';

/** attentionBias's value (model/layers.ts) where a query must not see a key. */
const MASKED = -10000;

export class CachedDecoder {
  /** Per layer: keys and values of every position fed so far, [1, heads, length, headDim]. */
  private readonly keys: (tf.Tensor4D | undefined)[];
  private readonly values: (tf.Tensor4D | undefined)[];
  private fed = 0;

  constructor(private readonly model: GPT) {
    const { slice, config } = model;
    if (!slice.hasEmbedding || !slice.hasHead || slice.startLayer !== 0 || slice.endLayer !== config.numLayers) {
      throw new Error('CachedDecoder needs the whole model (embedding, every block and the head)');
    }
    this.keys = new Array(config.numLayers).fill(undefined);
    this.values = new Array(config.numLayers).fill(undefined);
  }

  /** Positions fed so far. */
  get length(): number {
    return this.fed;
  }

  /** The most positions the model has embeddings for. */
  get contextSize(): number {
    return this.model.config.maxPositionEmbeddings;
  }

  /** Feeds `ids` (the prompt, then one token at a time) and returns the next token's logits [V] after the last of them. */
  async feed(ids: readonly number[]): Promise<Float32Array> {
    const { config } = this.model;
    if (ids.length === 0) throw new Error('CachedDecoder.feed: no token ids given');
    if (this.fed + ids.length > this.contextSize) {
      throw new Error(`the model sees at most ${this.contextSize} positions (maxPositionEmbeddings); ${this.fed} fed, ${ids.length} more asked`);
    }
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= config.vocabSize) throw new Error(`token id ${id} is outside the model's vocabulary [0, ${config.vocabSize})`);
    }
    const start = this.fed;
    const count = ids.length;
    const hidden = config.hiddenSize;
    const previous = [...this.keys, ...this.values];
    // GPT.block's own math (eval mode), each layer's keys and values extended with the cached ones.
    const withEarlierKeys: KeysAndValues = (layer, keys, values) => {
      const earlierKeys = this.keys[layer];
      const earlierValues = this.values[layer];
      const allKeys = tf.keep(earlierKeys === undefined ? keys : (tf.concat([earlierKeys, keys], 2) as tf.Tensor4D));
      const allValues = tf.keep(earlierValues === undefined ? values : (tf.concat([earlierValues, values], 2) as tf.Tensor4D));
      this.keys[layer] = allKeys;
      this.values[layer] = allValues;
      return [allKeys, allValues];
    };
    const logits = tf.tidy(() => {
      let x = this.model.embed(tf.tensor2d(Int32Array.from(ids), [1, count], 'int32'), {}, start);
      const bias = causalBias(start, count);
      for (let layer = 0; layer < config.numLayers; layer++) x = this.model.block(layer, x, bias, {}, withEarlierKeys);
      const last = tf.reshape(tf.slice(x, [0, count - 1, 0], [1, 1, hidden]), [1, hidden]);
      const normed = layerNorm(last, this.model.param('norm.gamma'), this.model.param('norm.beta'), config.layerNormEpsilon);
      return tf.reshape(tf.matMul(normed, this.model.param(WORD_EMBEDDING), false, true), [config.vocabSize]);
    });
    // The caches grew into new tensors; the old ones were only inputs.
    tf.dispose(previous.filter((t): t is tf.Tensor4D => t !== undefined));
    this.fed += count;
    try {
      return await readTensorCopy(logits);
    } finally {
      logits.dispose();
    }
  }

  dispose(): void {
    tf.dispose([...this.keys, ...this.values].filter((t): t is tf.Tensor4D => t !== undefined));
    this.keys.fill(undefined);
    this.values.fill(undefined);
    this.fed = 0;
  }
}

/** [1, 1, count, start + count]: query i (position start + i) sees keys 0..start + i; undefined where every key is visible (one new position). */
function causalBias(start: number, count: number): tf.Tensor4D | undefined {
  if (count === 1) return undefined;
  const total = start + count;
  const values = new Float32Array(count * total);
  for (let query = 0; query < count; query++) {
    for (let key = start + query + 1; key < total; key++) values[query * total + key] = MASKED;
  }
  return tf.tensor4d(values, [1, 1, count, total]);
}

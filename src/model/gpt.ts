/**
 * Implements: the GPT of the seed tutorial (ColossalAI model_zoo GPT, PipelineGPTHybrid) over a model
 * slice: token + position embedding with dropout, pre-LayerNorm blocks (causal self-attention with the
 * additive padding mask, GELU MLP), final LayerNorm and an LM head tied to the word embedding, and
 * GPTLMLoss (next-token cross-entropy averaged over every shifted position, padding included, as the
 * seed does). A slice holds variables only for its own layers, generated deterministically.
 */
import * as tf from '../tf.ts';
import type { GPTConfig } from './config.ts';
import { DropoutSite, EMBEDDING_LAYER, dropoutMask, type DropoutContext } from './dropout.ts';
import { activate, attentionBias, crossEntropy, layerNorm, linear } from './layers.ts';
import {
  POSITION_EMBEDDING,
  WORD_EMBEDDING,
  blockParamName,
  initialValues,
  paramsForSlice,
  type ModelSlice,
  type ParamSpec,
} from './params.ts';

/** Token ids and masks of one (micro-)batch, row-major [batch, seqLen]. */
export interface TokenBatch {
  inputIds: Int32Array;
  attentionMask: Uint8Array;
  batch: number;
  seqLen: number;
  /** Global dataset index of each sample: keys the dropout masks. */
  sampleIds: Int32Array;
}

/** Dropout applies only when given (training with a non-zero rate). */
export interface ForwardOptions {
  dropout?: DropoutContext;
}

/** A block's keys and values of this call, extended with those of earlier positions: [keys, values]. */
export type KeysAndValues = (layer: number, keys: tf.Tensor4D, values: tf.Tensor4D) => [tf.Tensor4D, tf.Tensor4D];

export class GPT {
  readonly specs: ParamSpec[];
  readonly params: Map<string, tf.Variable>;

  constructor(
    readonly config: GPTConfig,
    readonly slice: ModelSlice,
    seed: number,
  ) {
    const { hiddenSize, numAttentionHeads } = config;
    if (hiddenSize % numAttentionHeads !== 0) {
      throw new Error(`hiddenSize ${hiddenSize} is not divisible by numAttentionHeads ${numAttentionHeads}`);
    }
    this.specs = paramsForSlice(config, slice);
    // Unnamed variables: tfjs variable names are process-global, and tests hold several slices at once.
    this.params = new Map(this.specs.map((spec) => [spec.name, tf.tidy(() => tf.variable(tf.tensor(initialValues(spec, seed), spec.shape, 'float32'), true))]));
  }

  /** Trainable variables in the parameter table's order (the order gradients and optimizer state use). */
  variables(): tf.Variable[] {
    return this.specs.map((spec) => this.param(spec.name));
  }

  param(name: string): tf.Variable {
    const value = this.params.get(name);
    if (value === undefined) {
      throw new Error(`parameter ${name} is not held by this slice (layers ${this.slice.startLayer}-${this.slice.endLayer})`);
    }
    return value;
  }

  /**
   * Word + position embedding, then dropout. ids int32 [B, T] -> [B, T, H]; the ids sit at positions
   * `firstPosition` on (a cached decoder feeds later positions alone).
   */
  embed(ids: tf.Tensor2D, options: ForwardOptions, firstPosition = 0): tf.Tensor3D {
    const [batch, seqLen] = ids.shape;
    const hidden = this.config.hiddenSize;
    const words = tf.gather(this.param(WORD_EMBEDDING), tf.reshape(ids, [batch * seqLen]));
    const positions = tf.slice(this.param(POSITION_EMBEDDING), [firstPosition, 0], [seqLen, hidden]);
    const x = tf.add(tf.reshape(words, [batch, seqLen, hidden]), positions) as tf.Tensor3D;
    return this.dropout(x, this.config.embedDropRate, EMBEDDING_LAYER, DropoutSite.Embedding, options);
  }

  /**
   * One pre-LN transformer block: x + attn(ln1(x)), then + mlp(ln2(x)). bias [B, 1, T, T keys], or
   * undefined where every query sees every key. `withEarlierKeys` (a key/value cache) turns this call's
   * keys and values [B, heads, T, headDim] into those of every position attended to.
   */
  block(layer: number, x: tf.Tensor3D, bias: tf.Tensor4D | undefined, options: ForwardOptions, withEarlierKeys?: KeysAndValues): tf.Tensor3D {
    const p = (local: string) => this.param(blockParamName(layer, local));
    const eps = this.config.layerNormEpsilon;
    const normedIn = layerNorm(x, p('ln1.gamma'), p('ln1.beta'), eps) as tf.Tensor3D;
    const attended = this.attention(layer, normedIn, bias, options, withEarlierKeys);
    const afterAttention = tf.add(x, attended) as tf.Tensor3D;
    const normed = layerNorm(afterAttention, p('ln2.gamma'), p('ln2.beta'), eps) as tf.Tensor3D;
    const mlp = linear(activate(linear(normed, p('mlp.fc1.weight'), p('mlp.fc1.bias')), this.config.activation), p('mlp.fc2.weight'), p('mlp.fc2.bias'));
    const mlpOut = this.dropout(mlp as tf.Tensor3D, this.config.dropRate, layer, DropoutSite.MlpOutput, options);
    return tf.add(afterAttention, mlpOut) as tf.Tensor3D;
  }

  private attention(layer: number, x: tf.Tensor3D, bias: tf.Tensor4D | undefined, options: ForwardOptions, withEarlierKeys?: KeysAndValues): tf.Tensor3D {
    const p = (local: string) => this.param(blockParamName(layer, local));
    const [batch, seqLen, hidden] = x.shape;
    const heads = this.config.numAttentionHeads;
    const headDim = hidden / heads;
    // QKV columns are grouped per head ([head][q|k|v][headDim], see params.ts): split the last axis,
    // then the 4-D [0,2,1,3] transpose (a 5-D transpose costs 500x more on wasm).
    const qkv = tf.reshape(linear(x, p('attn.qkv.weight'), p('attn.qkv.bias')), [batch, seqLen, heads, 3 * headDim]);
    const [q, ownK, ownV] = tf.split(qkv, 3, 3).map((t) => tf.transpose(t, [0, 2, 1, 3])) as tf.Tensor4D[]; // (B, heads, T, headDim)
    const [k, v] = withEarlierKeys === undefined ? [ownK!, ownV!] : withEarlierKeys(layer, ownK!, ownV!);
    const scaled = tf.mul(tf.matMul(q!, k, false, true), 1 / Math.sqrt(headDim)); // (B, heads, T, T keys)
    const scores = bias === undefined ? scaled : tf.add(scaled, bias);
    const probs = this.dropout(tf.softmax(scores), this.config.attnDropRate, layer, DropoutSite.AttentionProbs, options);
    const context = tf.reshape(tf.transpose(tf.matMul(probs, v), [0, 2, 1, 3]), [batch, seqLen, hidden]);
    const out = linear(context, p('attn.proj.weight'), p('attn.proj.bias')) as tf.Tensor3D;
    return this.dropout(out, this.config.dropRate, layer, DropoutSite.AttentionOutput, options);
  }

  /** Final LayerNorm, tied LM head, GPTLMLoss: position t predicts token t+1. x [B, T, H] -> scalar. */
  headLoss(x: tf.Tensor3D, ids: tf.Tensor2D): tf.Scalar {
    const [batch, seqLen, hidden] = x.shape;
    const normed = layerNorm(x, this.param('norm.gamma'), this.param('norm.beta'), this.config.layerNormEpsilon);
    // Dropping the last position before the head saves 1/T of its flops; its logits are never used.
    const rows = tf.reshape(tf.slice(normed, [0, 0, 0], [batch, seqLen - 1, hidden]), [batch * (seqLen - 1), hidden]);
    const logits = tf.matMul(rows, this.param(WORD_EMBEDDING), false, true) as tf.Tensor2D;
    const labels = tf.reshape(tf.slice(ids, [0, 1], [batch, seqLen - 1]), [batch * (seqLen - 1)]) as tf.Tensor1D;
    return crossEntropy(logits, labels);
  }

  /**
   * This slice's part of the forward pass: token ids in when it holds the embedding, else the previous
   * stage's hidden states; the loss out when it holds the head, else hidden states.
   */
  forward(batch: TokenBatch, hiddenIn: tf.Tensor3D | undefined, options: ForwardOptions): tf.Tensor {
    const ids = tf.tensor2d(batch.inputIds, [batch.batch, batch.seqLen], 'int32');
    const bias = attentionBias(batch.attentionMask, batch.batch, batch.seqLen);
    let x: tf.Tensor3D;
    if (this.slice.hasEmbedding) {
      x = this.embed(ids, options);
    } else if (hiddenIn !== undefined) {
      x = hiddenIn;
    } else {
      throw new Error(`stage holding layers ${this.slice.startLayer}-${this.slice.endLayer} needs hidden states from the previous stage`);
    }
    for (let layer = this.slice.startLayer; layer < this.slice.endLayer; layer++) x = this.block(layer, x, bias, options);
    return this.slice.hasHead ? this.headLoss(x, ids) : x;
  }

  /** Loss of the whole model on a batch; only for a slice that holds everything. */
  loss(batch: TokenBatch, options: ForwardOptions = {}): tf.Scalar {
    if (!this.slice.hasEmbedding || !this.slice.hasHead) throw new Error('loss() needs the full model; use forward() on a stage');
    return this.forward(batch, undefined, options) as tf.Scalar;
  }

  dispose(): void {
    for (const variable of this.params.values()) variable.dispose();
    this.params.clear();
  }

  private dropout<T extends tf.Tensor>(x: T, rate: number, layer: number, site: DropoutSite, options: ForwardOptions): T {
    if (rate === 0 || options.dropout === undefined) return x;
    return tf.mul(x, dropoutMask(options.dropout, rate, layer, site, x.shape.slice(1))) as T;
  }
}

/**
 * Implements: one tensor-parallel rank's slice of the GPT (Megatron 1-D): it holds only its shard of
 * every parameter (sharding.ts decides the regions; values from the counter-based init, so the shards
 * are exact slices of the single-process model) and runs forward and backward as a chain of local
 * segments with all-reduces between them (segment-chain.ts). Per block:
 *
 *   A  (replicated)  x = residual + (sum + bias) | LN1(x)           -> [ln1, x]
 *   A' (parallel)    this rank's heads: QKV, causal attention, proj -> partial, ALL-REDUCE
 *   B  (replicated)  a = x + (attn + proj.bias)  | LN2(a)            -> [ln2, a]
 *   B' (parallel)    fc1 columns + bias shard, GELU, fc2 rows        -> partial, ALL-REDUCE
 *
 * The next block's A (or the tail) adds fc2's bias and the residual. The embedding is a parallel
 * segment (masked lookup of this rank's vocabulary range, all-reduced) followed by the first A adding
 * the position embedding; the head is a replicated final LayerNorm, then a parallel segment making
 * this rank's logit columns with its embedding rows (tied), then the vocab-parallel cross-entropy.
 */
import type { GPTConfig } from '../model/config.ts';
import type { TokenBatch } from '../model/gpt.ts';
import { attentionBias, gelu, layerNorm, linear } from '../model/layers.ts';
import { POSITION_EMBEDDING, WORD_EMBEDDING, blockParamName, initialValues, paramsForSlice, type ModelSlice, type ParamSpec } from '../model/params.ts';
import { shardKind, shardRegion, tensorParallelProblems, type ShardKind } from '../model/sharding.ts';
import * as tf from '../tf.ts';
import {
  releaseRecord,
  runChainBackward,
  runChainForward,
  type ChainRecord,
  type Segment,
  type TensorParallelGroup,
} from './segment-chain.ts';
import { maskedLookup, vocabParallelCrossEntropy, type VocabParallelLoss, type VocabRange } from './vocab-parallel.ts';

export interface TensorParallelGPTOptions {
  config: GPTConfig;
  slice: ModelSlice;
  seed: number;
  /** The tp group; this rank holds shard `group.groupRank` of `group.size`. */
  group: TensorParallelGroup;
}

/** A forward in flight: what backward needs. Its tensors belong to the model until backward or release. */
export interface TensorParallelForward {
  /** Mean loss of the micro-batch (slices holding the head). */
  loss?: number;
  /** Output hidden states [B, T, H], identical on every tp rank (slices without the head). */
  hidden?: tf.Tensor3D;
  /** @internal */
  record: ChainRecord;
  /** @internal */
  crossEntropy?: VocabParallelLoss;
  /** @internal batch constants (ids, attention bias) */
  constants: tf.Tensor[];
}

export interface TensorParallelBackward {
  /** Gradient of the slice's input hidden states (slices without the embedding), identical on every tp rank. */
  inputGrad?: tf.Tensor3D;
  /** Gradient of every parameter shard this slice holds, by global name. The caller disposes them. */
  grads: Map<string, tf.Tensor>;
}

export class TensorParallelGPT {
  /** The FULL parameter specs of the slice, in the parameter table's order. */
  readonly specs: ParamSpec[];
  /** This rank's shard of each, by global name. */
  readonly params: Map<string, tf.Variable>;
  readonly tp: number;
  readonly tpRank: number;
  readonly vocabRange: VocabRange;
  private readonly localHeads: number;

  constructor(private readonly options: TensorParallelGPTOptions) {
    const { config, slice, seed, group } = options;
    this.tp = group.size;
    this.tpRank = group.groupRank;
    const problems = tensorParallelProblems(config, this.tp);
    if (config.hiddenSize % config.numAttentionHeads !== 0) problems.push(`hiddenSize ${config.hiddenSize} is not divisible by numAttentionHeads ${config.numAttentionHeads}`);
    if (problems.length > 0) throw new Error(`TensorParallelGPT: the model does not split over ${this.tp} ranks: ${problems.join('; ')}`);
    const dropping = (['embedDropRate', 'attnDropRate', 'dropRate'] as const).filter((key) => config[key] !== 0);
    if (dropping.length > 0) {
      throw new Error(`TensorParallelGPT does not implement dropout yet: set model.${dropping.join(', model.')} to 0 (or train with tensor size 1)`);
    }
    this.localHeads = config.numAttentionHeads / this.tp;
    this.vocabRange = { start: this.tpRank * (config.vocabSize / this.tp), size: config.vocabSize / this.tp };
    this.specs = paramsForSlice(config, slice);
    this.params = new Map(
      this.specs.map((spec) => {
        const region = shardRegion(spec, this.tp, this.tpRank, config.numAttentionHeads);
        return [spec.name, tf.tidy(() => tf.variable(tf.tensor(initialValues(spec, seed, region), region.size, 'float32'), true))];
      }),
    );
  }

  get config(): GPTConfig {
    return this.options.config;
  }

  get slice(): ModelSlice {
    return this.options.slice;
  }

  /** How each parameter splits (column, row, vocab or replicated). */
  shardKind(name: string): ShardKind {
    const spec = this.specs.find((s) => s.name === name);
    if (spec === undefined) throw new Error(`parameter ${name} is not held by this slice`);
    return shardKind(spec);
  }

  param(name: string): tf.Variable {
    const value = this.params.get(name);
    if (value === undefined) {
      throw new Error(`parameter ${name} is not held by this tensor-parallel slice (layers ${this.slice.startLayer}-${this.slice.endLayer})`);
    }
    return value;
  }

  /**
   * This slice's forward on one micro-batch: token ids in when it holds the embedding, else `hiddenIn`
   * (the caller keeps ownership); the loss when it holds the head, else hidden states. Every rank of
   * the tp group must call it with the same batch, in the same order as its other collectives.
   */
  async forward(batch: TokenBatch, hiddenIn?: tf.Tensor3D): Promise<TensorParallelForward> {
    const { slice } = this;
    if (!slice.hasEmbedding && hiddenIn === undefined) {
      throw new Error(`tensor-parallel slice holding layers ${slice.startLayer}-${slice.endLayer} needs hidden states from the previous stage`);
    }
    const attnBias = attentionBias(batch.attentionMask, batch.batch, batch.seqLen);
    let record: ChainRecord;
    try {
      record = await runChainForward(this.options.group, this.segments(batch, attnBias), slice.hasEmbedding ? [] : [hiddenIn!]);
    } catch (error) {
      attnBias.dispose();
      throw error;
    }
    const forward: TensorParallelForward = { record, constants: [attnBias] };
    if (!slice.hasHead) {
      forward.hidden = record.output[0] as tf.Tensor3D;
      return forward;
    }
    try {
      forward.crossEntropy = await vocabParallelCrossEntropy(this.options.group, record.output[0] as tf.Tensor2D, labelsOf(batch), this.vocabRange);
    } catch (error) {
      this.release(forward);
      throw error;
    }
    forward.loss = forward.crossEntropy.loss;
    return forward;
  }

  /**
   * The backward of `forward`: `outputGrad` is the gradient of the output hidden states (slices
   * without the head; the caller keeps it); with the head, the loss's own gradient, times `lossScale`.
   * Releases the forward's tensors.
   */
  async backward(forward: TensorParallelForward, outputGrad?: tf.Tensor3D, lossScale = 1): Promise<TensorParallelBackward> {
    let seed: tf.Tensor;
    if (forward.crossEntropy !== undefined) {
      seed = forward.crossEntropy.backward(lossScale);
    } else if (outputGrad !== undefined) {
      seed = outputGrad;
    } else {
      this.release(forward);
      throw new Error(`tensor-parallel slice holding layers ${this.slice.startLayer}-${this.slice.endLayer} needs the gradient of its output`);
    }
    try {
      const { inputGrads, paramGrads } = await runChainBackward(this.options.group, forward.record, [seed], (name) => this.param(name));
      return { grads: paramGrads, inputGrad: inputGrads[0] as tf.Tensor3D | undefined };
    } finally {
      if (seed !== outputGrad) seed.dispose();
      this.release(forward);
    }
  }

  /** Frees a forward's tensors without a backward (evaluation). */
  release(forward: TensorParallelForward): void {
    releaseRecord(forward.record);
    forward.crossEntropy?.dispose();
    for (const t of forward.constants) t.dispose();
    forward.constants = [];
  }

  /** Forward and backward of a whole model (embedding to loss) on one micro-batch. */
  async lossAndGradients(batch: TokenBatch): Promise<{ loss: number; grads: Map<string, tf.Tensor> }> {
    if (!this.slice.hasEmbedding || !this.slice.hasHead) throw new Error('lossAndGradients() needs the full model; use forward()/backward() on a stage');
    const forward = await this.forward(batch);
    const { grads } = await this.backward(forward);
    return { loss: forward.loss!, grads };
  }

  dispose(): void {
    for (const variable of this.params.values()) variable.dispose();
    this.params.clear();
  }

  /** The chain of this slice for one batch (closures over its ids and attention bias). */
  private segments(batch: TokenBatch, attnBias: tf.Tensor4D): Segment[] {
    const { config, slice } = this;
    const eps = config.layerNormEpsilon;
    const p = (name: string) => this.param(name);
    const segments: Segment[] = [];
    const { batch: b, seqLen } = batch;
    const hidden = config.hiddenSize;

    // The residual stream entering the next replicated segment, and the parameters that entry reads.
    let entry: { params: string[]; x: (live: tf.Tensor[]) => tf.Tensor3D };
    if (slice.hasEmbedding) {
      segments.push({
        kind: 'parallel',
        name: 'embedding (vocab-parallel lookup)',
        params: [WORD_EMBEDDING],
        reduceOutput: true,
        run: () => tf.reshape(maskedLookup(p(WORD_EMBEDDING) as tf.Tensor as tf.Tensor2D, batch.inputIds, this.vocabRange), [b, seqLen, hidden]),
      });
      entry = {
        params: [POSITION_EMBEDDING],
        x: ([words]) => tf.add(words, tf.slice(p(POSITION_EMBEDDING), [0, 0], [seqLen, hidden])) as tf.Tensor3D,
      };
    } else {
      entry = { params: [], x: ([hiddenIn]) => hiddenIn as tf.Tensor3D };
    }
    for (let layer = slice.startLayer; layer < slice.endLayer; layer++) {
      const name = (local: string) => blockParamName(layer, local);
      const enter = entry;
      segments.push({
        kind: 'replicated',
        name: `block ${layer} residual + ln1`,
        params: [...enter.params, name('ln1.gamma'), name('ln1.beta')],
        run: (live) => {
          const x = enter.x(live);
          return [layerNorm(x, p(name('ln1.gamma')), p(name('ln1.beta')), eps), x];
        },
      });
      segments.push({
        kind: 'parallel',
        name: `block ${layer} attention (this rank's heads)`,
        params: [name('attn.qkv.weight'), name('attn.qkv.bias'), name('attn.proj.weight')],
        reduceOutput: true,
        run: (normed) => this.attentionPartial(layer, normed as tf.Tensor3D, attnBias),
      });
      segments.push({
        kind: 'replicated',
        name: `block ${layer} residual + ln2`,
        params: [name('attn.proj.bias'), name('ln2.gamma'), name('ln2.beta')],
        run: ([attended, x]) => {
          const afterAttention = tf.add(x, tf.add(attended, p(name('attn.proj.bias'))));
          return [layerNorm(afterAttention, p(name('ln2.gamma')), p(name('ln2.beta')), eps), afterAttention];
        },
      });
      segments.push({
        kind: 'parallel',
        name: `block ${layer} mlp (this rank's columns)`,
        params: [name('mlp.fc1.weight'), name('mlp.fc1.bias'), name('mlp.fc2.weight')],
        reduceOutput: true,
        run: (normed) => linear(gelu(linear(normed!, p(name('mlp.fc1.weight')), p(name('mlp.fc1.bias')))), p(name('mlp.fc2.weight'))),
      });
      entry = {
        params: [name('mlp.fc2.bias')],
        x: ([mlp, afterAttention]) => tf.add(afterAttention, tf.add(mlp, p(name('mlp.fc2.bias')))) as tf.Tensor3D,
      };
    }
    const exit = entry;
    if (!slice.hasHead) {
      segments.push({ kind: 'replicated', name: 'stage output', params: exit.params, run: (live) => [exit.x(live)] });
      return segments;
    }
    segments.push({
      kind: 'replicated',
      name: 'final layer norm',
      params: [...exit.params, 'norm.gamma', 'norm.beta'],
      run: (live) => [layerNorm(exit.x(live), p('norm.gamma'), p('norm.beta'), eps)],
    });
    segments.push({
      kind: 'parallel',
      name: 'LM head (vocab-parallel, tied)',
      params: [WORD_EMBEDDING],
      reduceOutput: false,
      // The last position predicts nothing: drop it before the head, as GPT.headLoss does.
      run: (normed) => {
        const rows = tf.reshape(tf.slice(normed!, [0, 0, 0], [b, seqLen - 1, hidden]), [b * (seqLen - 1), hidden]);
        return tf.matMul(rows, p(WORD_EMBEDDING), false, true);
      },
    });
    return segments;
  }

  /** Causal attention over this rank's heads and its rows of the output projection: a partial sum, no bias. */
  private attentionPartial(layer: number, x: tf.Tensor3D, bias: tf.Tensor4D): tf.Tensor3D {
    const p = (local: string) => this.param(blockParamName(layer, local));
    const [batch, seqLen, hidden] = x.shape;
    const heads = this.localHeads;
    const headDim = hidden / this.config.numAttentionHeads;
    // This rank's QKV columns are its heads, each [q|k|v][headDim] (params.ts): the same split as GPT's.
    const qkv = tf.reshape(linear(x, p('attn.qkv.weight'), p('attn.qkv.bias')), [batch, seqLen, heads, 3 * headDim]);
    const [q, k, v] = tf.split(qkv, 3, 3).map((t) => tf.transpose(t, [0, 2, 1, 3]));
    const scores = tf.add(tf.mul(tf.matMul(q, k, false, true), 1 / Math.sqrt(headDim)), bias);
    const context = tf.reshape(tf.transpose(tf.matMul(tf.softmax(scores), v), [0, 2, 1, 3]), [batch, seqLen, heads * headDim]);
    return linear(context, p('attn.proj.weight')) as tf.Tensor3D;
  }
}

/** Next-token labels: position t predicts token t+1, rows [B * (T - 1)]. */
function labelsOf(batch: TokenBatch): Int32Array {
  const { batch: b, seqLen, inputIds } = batch;
  const labels = new Int32Array(b * (seqLen - 1));
  for (let row = 0; row < b; row++) labels.set(inputIds.subarray(row * seqLen + 1, (row + 1) * seqLen), row * (seqLen - 1));
  return labels;
}

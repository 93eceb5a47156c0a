/**
 * Implements: one pre-LN transformer block (GPT.block's math) as a forward that keeps its activations
 * and an analytic backward over them (llm.c's block forward/backward), tensor-parallel the Megatron way:
 * LN1 -> QKV (column-parallel: this rank's heads) -> causal attention -> proj (row-parallel: a partial
 * sum, ALL-REDUCED, then the bias) -> residual; LN2 -> fc1 (column-parallel) -> GELU -> fc2
 * (row-parallel, ALL-REDUCED, then the bias) -> residual. Backward, the column-parallel layers' input
 * gradients (QKV's and fc1's) are partial sums and are ALL-REDUCED before their LayerNorm's backward.
 * The all-reduces are yielded requests (collective-steps.ts): with a group of one they are skipped and
 * this is exactly the single-process block.
 *
 * The backward is split as zero-bubble schedules need it: blockBackwardInput computes the gradient of
 * the block's input (and the LayerNorms' parameter gradients, which its fused kernel yields anyway) and
 * keeps, for each linear, its input and output gradient; blockBackwardWeight turns those into the
 * weight and bias gradients, later if the caller wants.
 *
 * LayerNorms, the row-parallel biases and the residual stream are replicated: their inputs and output
 * gradients are all-reduced values, identical on every tp rank, so their gradients come out identical
 * on every rank with no all-reduce. Dropout uses the same masks as GPT.block (a rank takes its heads'
 * rows of the attention-probability mask) and keeps them for the backward.
 */
import * as tf from '../../tf.ts';
import { tidyKeep } from './tidy.ts';
import type { GPTConfig } from '../config.ts';
import { DropoutSite, dropoutMask, type DropoutContext } from '../dropout.ts';
import { allReduce, runLocally, type CollectiveSteps } from '../../tensor-parallel/collective-steps.ts';
import { addBiasToResidual, attentionProbs, attentionScoresGrad, geluBackward, geluForward, layerNormBackward, layerNormForward, linear, mergeHeads, splitHeads, sumRows, type GeluSaved, type LayerNormSaved } from './primitives.ts';

/** A block's parameters (this rank's shards) by local name (params.ts: 'ln1.gamma', 'attn.qkv.weight', ...). */
export type BlockParams = ReadonlyMap<string, tf.Tensor>;

export const BLOCK_PARAM_NAMES = [
  'ln1.gamma', 'ln1.beta', 'attn.qkv.weight', 'attn.qkv.bias', 'attn.proj.weight', 'attn.proj.bias',
  'ln2.gamma', 'ln2.beta', 'mlp.fc1.weight', 'mlp.fc1.bias', 'mlp.fc2.weight', 'mlp.fc2.bias',
] as const;

/** The block's linear layers, each with its weight and bias by local name. */
const LINEARS = ['attn.qkv', 'attn.proj', 'mlp.fc1', 'mlp.fc2'] as const;
type Linear = (typeof LINEARS)[number];

export interface BlockForwardOptions {
  /** Training dropout; needs `layer` (part of the mask key). */
  dropout?: DropoutContext;
  layer?: number;
  /** This rank's index in the tp group: which heads' dropout masks it takes (default 0). */
  tpRank?: number;
}

/** Everything the block's backward reads. Rows are B*T. Dispose with tf.dispose(saved). */
export interface BlockSaved {
  batch: number;
  seqLen: number;
  ln1: LayerNormSaved;
  /** LN1 output [rows, H]: the QKV matmul's input. */
  normed1: tf.Tensor2D;
  /** [B, local heads, T, headDim] each. */
  q: tf.Tensor4D;
  k: tf.Tensor4D;
  v: tf.Tensor4D;
  /** softmax(scores) [B, local heads, T, T], before dropout. */
  probs: tf.Tensor4D;
  /** This rank's heads merged back [rows, H/tp]: the proj matmul's input. */
  context: tf.Tensor2D;
  ln2: LayerNormSaved;
  normed2: tf.Tensor2D;
  gelu: GeluSaved;
  /** GELU output [rows, F/tp]: the fc2 matmul's input. */
  activated: tf.Tensor2D;
  /** Dropout masks (scaled keep-masks) of the sites that dropped, shaped like their activation. */
  probsMask?: tf.Tensor;
  attnOutMask?: tf.Tensor;
  mlpOutMask?: tf.Tensor;
}

/**
 * What blockBackwardWeight needs: each linear's input and the gradient of its output (the weight's
 * gradient is input^T dOutput, the bias's the rows' sum of dOutput), and the LayerNorms' gradients.
 */
export interface BlockWeightWork {
  linears: Record<Linear, { input: tf.Tensor2D; dOutput: tf.Tensor2D }>;
  layerNorms: Record<'ln1' | 'ln2', { dgamma: tf.Tensor1D; dbeta: tf.Tensor1D }>;
}

function param(params: BlockParams, name: string): tf.Tensor {
  const value = params.get(name);
  if (value === undefined) throw new Error(`block parameter '${name}' missing; got [${[...params.keys()].join(', ')}]`);
  return value;
}

function maskFor(options: BlockForwardOptions, rate: number, site: DropoutSite, perSampleShape: number[]): tf.Tensor | undefined {
  if (rate === 0 || options.dropout === undefined) return undefined;
  if (options.layer === undefined) throw new Error('block forward: dropout needs options.layer (it keys the masks)');
  return dropoutMask(options.dropout, rate, options.layer, site, perSampleShape);
}

/** Disposes the tensors of `held` unless the generator finished (a failed collective abandons it). */
function releaseUnlessDone(done: boolean, held: unknown[]): void {
  if (!done) tf.dispose(held as tf.TensorContainer);
}

/**
 * x [B, T, H] (replicated), bias [B, 1, T, T] -> y [B, T, H] (replicated) and the activations the
 * backward needs. The caller keeps `x` alive until the steps finish and keeps ownership of it.
 */
export function* blockForwardSteps(
  params: BlockParams, x: tf.Tensor3D, bias: tf.Tensor4D, config: GPTConfig, options: BlockForwardOptions = {},
): CollectiveSteps<{ y: tf.Tensor3D; saved: BlockSaved }> {
  const [batch, seqLen, hidden] = x.shape;
  const headDim = hidden / config.numAttentionHeads;
  // This rank's heads: its QKV columns are whole heads, each [q|k|v][headDim] (params.ts, sharding.ts).
  const heads = param(params, 'attn.qkv.weight').shape[1]! / (3 * headDim);
  const rows = batch * seqLen;
  const eps = config.layerNormEpsilon;
  const site = `block ${options.layer ?? '?'}`;
  const held: unknown[] = [];
  let done = false;
  try {
    const attention = tidyKeep(() => {
      const x2 = tf.reshape(x, [rows, hidden]) as tf.Tensor2D;
      const ln1 = layerNormForward(x2, param(params, 'ln1.gamma'), param(params, 'ln1.beta'), eps);
      const qkv = tf.reshape(linear(ln1.y, param(params, 'attn.qkv.weight') as tf.Tensor2D, param(params, 'attn.qkv.bias')), [batch, seqLen, heads, 3 * headDim]);
      const [q, k, v] = splitHeads(qkv as tf.Tensor4D);
      const probs = attentionProbs(tf.matMul(q, k, false, true), bias, 1 / Math.sqrt(headDim));
      const fullMask = maskFor(options, config.attnDropRate, DropoutSite.AttentionProbs, [config.numAttentionHeads, seqLen, seqLen]);
      const probsMask = fullMask === undefined || heads === config.numAttentionHeads
        ? fullMask
        : tf.slice(fullMask, [0, (options.tpRank ?? 0) * heads, 0, 0], [batch, heads, seqLen, seqLen]);
      const dropped = probsMask === undefined ? probs : tf.mul(probs, probsMask);
      const context = tf.reshape(tf.transpose(tf.matMul(dropped, v), [0, 2, 1, 3]), [rows, heads * headDim]) as tf.Tensor2D;
      // Row-parallel: this rank's heads' share of the projection, summed over the group before the bias.
      const partial = tf.matMul(context, param(params, 'attn.proj.weight') as tf.Tensor2D);
      return { ln1: ln1.saved, normed1: ln1.y, q, k, v, probs, probsMask, context, partial };
    });
    const { partial: attnPartial, ...attentionSaved } = attention;
    held.push(attentionSaved);
    const attnSum = yield allReduce(attnPartial, 'sum', `${site} attention output`);
    held.push(attnSum);
    const mlp = tidyKeep(() => {
      const attnOutMask = maskFor(options, config.dropRate, DropoutSite.AttentionOutput, [seqLen, hidden]);
      const x2 = tf.reshape(x, [rows, hidden]) as tf.Tensor2D;
      const afterAttention = attnOutMask === undefined
        ? addBiasToResidual(x2, attnSum as tf.Tensor2D, param(params, 'attn.proj.bias'))
        : (tf.add(x2, tf.mul(tf.add(attnSum, param(params, 'attn.proj.bias')), tf.reshape(attnOutMask, [rows, hidden]))) as tf.Tensor2D);
      const ln2 = layerNormForward(afterAttention, param(params, 'ln2.gamma'), param(params, 'ln2.beta'), eps);
      const fc1 = linear(ln2.y, param(params, 'mlp.fc1.weight') as tf.Tensor2D, param(params, 'mlp.fc1.bias'));
      const gelu = geluForward(fc1, config.activation);
      const activated = gelu.y as tf.Tensor2D;
      const partial = tf.matMul(activated, param(params, 'mlp.fc2.weight') as tf.Tensor2D);
      return { attnOutMask, afterAttention, ln2: ln2.saved, normed2: ln2.y, gelu: gelu.saved, activated, partial };
    });
    attnSum.dispose();
    const { partial: mlpPartial, afterAttention, ...mlpSaved } = mlp;
    held.push(mlpSaved, afterAttention);
    const mlpSum = yield allReduce(mlpPartial, 'sum', `${site} MLP output`);
    held.push(mlpSum);
    const out = tidyKeep(() => {
      const mlpOutMask = maskFor(options, config.dropRate, DropoutSite.MlpOutput, [seqLen, hidden]);
      const y = mlpOutMask === undefined
        ? addBiasToResidual(afterAttention, mlpSum as tf.Tensor2D, param(params, 'mlp.fc2.bias'))
        : tf.add(afterAttention, tf.mul(tf.add(mlpSum, param(params, 'mlp.fc2.bias')), tf.reshape(mlpOutMask, [rows, hidden])));
      return { y: tf.reshape(y, [batch, seqLen, hidden]) as tf.Tensor3D, mlpOutMask };
    });
    mlpSum.dispose();
    afterAttention.dispose();
    done = true;
    return { y: out.y, saved: { batch, seqLen, ...attentionSaved, ...mlpSaved, mlpOutMask: out.mlpOutMask } };
  } finally {
    releaseUnlessDone(done, held);
  }
}

/**
 * dy [B, T, H] (gradient of the block's output, replicated) -> dx [B, T, H] (replicated) and the work
 * for blockBackwardWeight. Consumes `saved` (what the weight work needs moves into it); the caller keeps
 * ownership of `dy`.
 */
export function* blockBackwardInputSteps(
  params: BlockParams, saved: BlockSaved, dy: tf.Tensor3D, config: GPTConfig, layer?: number,
): CollectiveSteps<{ dx: tf.Tensor3D; work: BlockWeightWork }> {
  const { batch, seqLen } = saved;
  const hidden = config.hiddenSize;
  const headDim = hidden / config.numAttentionHeads;
  const heads = saved.q.shape[1];
  const rows = batch * seqLen;
  const site = `block ${layer ?? '?'} backward`;
  // `saved` is consumed whatever happens: a failing all-reduce (a peer gone) must not strand it.
  const held: unknown[] = [saved];
  let done = false;
  try {
    // MLP branch: y = afterAttention + drop(fc2(gelu(fc1(ln2(afterAttention))))).
    const mlp = tidyKeep(() => {
      const dy2 = tf.reshape(dy, [rows, hidden]) as tf.Tensor2D;
      const dMlpOut = saved.mlpOutMask === undefined ? dy2 : (tf.mul(dy2, tf.reshape(saved.mlpOutMask, [rows, hidden])) as tf.Tensor2D);
      const dActivated = tf.matMul(dMlpOut, param(params, 'mlp.fc2.weight') as tf.Tensor2D, false, true);
      const dFc1 = geluBackward(dActivated, saved.gelu) as tf.Tensor2D;
      // Column-parallel fc1: this rank's columns' share of the input gradient.
      const partial = tf.matMul(dFc1, param(params, 'mlp.fc1.weight') as tf.Tensor2D, false, true);
      return { dMlpOut, dFc1, partial };
    });
    held.push(mlp.dMlpOut, mlp.dFc1);
    const dNormed2 = (yield allReduce(mlp.partial, 'sum', `${site} fc1 input gradient`)) as tf.Tensor2D;
    held.push(dNormed2);
    // Attention branch: afterAttention = x + drop(proj(attention(qkv(ln1(x))))).
    const attention = tidyKeep(() => {
      const ln2 = layerNormBackward(dNormed2, saved.ln2, param(params, 'ln2.gamma'), tf.reshape(dy, [rows, hidden]) as tf.Tensor2D);
      const dAfterAttention = ln2.dx;
      const dAttnOut = saved.attnOutMask === undefined
        ? dAfterAttention
        : (tf.mul(dAfterAttention, tf.reshape(saved.attnOutMask, [rows, hidden])) as tf.Tensor2D);
      const dContext2 = tf.matMul(dAttnOut, param(params, 'attn.proj.weight') as tf.Tensor2D, false, true);
      const dContext = tf.transpose(tf.reshape(dContext2, [batch, seqLen, heads, headDim]), [0, 2, 1, 3]) as tf.Tensor4D;
      const dropped = saved.probsMask === undefined ? saved.probs : (tf.mul(saved.probs, saved.probsMask) as tf.Tensor4D);
      const dDropped = tf.matMul(dContext, saved.v, false, true);
      const dv = tf.matMul(dropped, dContext, true, false);
      const dProbs = saved.probsMask === undefined ? dDropped : tf.mul(dDropped, saved.probsMask);
      // scores = q k^T * scale + bias; the bias is a constant.
      const dScores = attentionScoresGrad(dProbs as tf.Tensor4D, saved.probs, 1 / Math.sqrt(headDim));
      const dq = tf.matMul(dScores, saved.k);
      const dk = tf.matMul(dScores, saved.q, true, false);
      const dQkv = tf.reshape(mergeHeads(dq as tf.Tensor4D, dk as tf.Tensor4D, dv as tf.Tensor4D), [rows, 3 * heads * headDim]) as tf.Tensor2D;
      // Column-parallel QKV: this rank's heads' share of the input gradient.
      const partial = tf.matMul(dQkv, param(params, 'attn.qkv.weight') as tf.Tensor2D, false, true);
      return { ln2: { dgamma: ln2.dgamma, dbeta: ln2.dbeta }, dAfterAttention, dAttnOut, dQkv, partial };
    });
    dNormed2.dispose();
    held.push(attention.ln2, attention.dAfterAttention, attention.dAttnOut, attention.dQkv);
    const dNormed1 = (yield allReduce(attention.partial, 'sum', `${site} QKV input gradient`)) as tf.Tensor2D;
    held.push(dNormed1);
    const input = tidyKeep(() => {
      const ln1 = layerNormBackward(dNormed1, saved.ln1, param(params, 'ln1.gamma'), attention.dAfterAttention);
      return { dx: tf.reshape(ln1.dx, [batch, seqLen, hidden]) as tf.Tensor3D, ln1: { dgamma: ln1.dgamma, dbeta: ln1.dbeta } };
    });
    dNormed1.dispose();
    if (attention.dAfterAttention !== attention.dAttnOut) attention.dAfterAttention.dispose();
    const { normed1, context, normed2, activated } = saved;
    tf.dispose([saved.ln1, saved.q, saved.k, saved.v, saved.probs, saved.ln2, saved.gelu, saved.probsMask, saved.attnOutMask, saved.mlpOutMask] as tf.TensorContainer);
    done = true;
    const work: BlockWeightWork = {
      linears: {
        'attn.qkv': { input: normed1, dOutput: attention.dQkv },
        'attn.proj': { input: context, dOutput: attention.dAttnOut },
        'mlp.fc1': { input: normed2, dOutput: mlp.dFc1 },
        'mlp.fc2': { input: activated, dOutput: mlp.dMlpOut },
      },
      layerNorms: { ln1: input.ln1, ln2: attention.ln2 },
    };
    return { dx: input.dx, work };
  } finally {
    releaseUnlessDone(done, held);
  }
}

/** Every parameter's gradient by local name (BLOCK_PARAM_NAMES order) from the work; consumes it. */
export function blockBackwardWeight(work: BlockWeightWork): Map<string, tf.Tensor> {
  const grads = tidyKeep(() => {
    const out: Record<string, tf.Tensor> = {};
    for (const name of LINEARS) {
      const { input, dOutput } = work.linears[name];
      out[`${name}.weight`] = tf.matMul(input, dOutput, true, false);
      out[`${name}.bias`] = sumRows(dOutput);
    }
    return out;
  });
  for (const { input, dOutput } of Object.values(work.linears)) tf.dispose([input, dOutput]);
  for (const [ln, { dgamma, dbeta }] of Object.entries(work.layerNorms)) {
    grads[`${ln}.gamma`] = dgamma;
    grads[`${ln}.beta`] = dbeta;
  }
  return new Map(BLOCK_PARAM_NAMES.map((name) => [name, grads[name]!]));
}

/** The block backward without a group (single process): input gradient and every parameter's. Consumes `saved`. */
export function blockBackward(
  params: BlockParams, saved: BlockSaved, dy: tf.Tensor3D, config: GPTConfig,
): { dx: tf.Tensor3D; grads: Map<string, tf.Tensor> } {
  const { dx, work } = runLocally(blockBackwardInputSteps(params, saved, dy, config));
  return { dx, grads: blockBackwardWeight(work) };
}

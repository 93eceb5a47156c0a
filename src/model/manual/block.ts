/**
 * Implements: one pre-LN transformer block (GPT.block's math) as a forward that keeps its activations
 * and an analytic backward over them (llm.c's block forward/backward): LN1 -> QKV (per-head grouped
 * columns) -> causal attention with the additive bias -> proj -> residual; LN2 -> fc1 -> GELU -> fc2 ->
 * residual. Dropout, when given, uses the same masks as GPT.block and keeps them for the backward.
 */
import * as tf from '../../tf.ts';
import { tidyKeep } from './tidy.ts';
import type { GPTConfig } from '../config.ts';
import { DropoutSite, dropoutMask, type DropoutContext } from '../dropout.ts';
import {
  geluBackward,
  geluForward,
  layerNormBackward,
  layerNormForward,
  linearBackward,
  linearForward,
  softmaxBackward,
  type GeluSaved,
  type LayerNormSaved,
} from './primitives.ts';

/** A block's parameters by local name (params.ts: 'ln1.gamma', 'attn.qkv.weight', ...). */
export type BlockParams = ReadonlyMap<string, tf.Tensor>;

export const BLOCK_PARAM_NAMES = [
  'ln1.gamma', 'ln1.beta', 'attn.qkv.weight', 'attn.qkv.bias', 'attn.proj.weight', 'attn.proj.bias',
  'ln2.gamma', 'ln2.beta', 'mlp.fc1.weight', 'mlp.fc1.bias', 'mlp.fc2.weight', 'mlp.fc2.bias',
] as const;

export interface BlockForwardOptions {
  /** Training dropout; needs `layer` (part of the mask key). */
  dropout?: DropoutContext;
  layer?: number;
}

/** Everything blockBackward reads. Rows are B*T. Dispose with tf.dispose(saved). */
export interface BlockSaved {
  batch: number;
  seqLen: number;
  ln1: LayerNormSaved;
  /** LN1 output [rows, H]: the QKV matmul's input. */
  normed1: tf.Tensor2D;
  /** [B, heads, T, headDim] each. */
  q: tf.Tensor4D;
  k: tf.Tensor4D;
  v: tf.Tensor4D;
  /** softmax(scores) [B, heads, T, T], before dropout. */
  probs: tf.Tensor4D;
  /** Heads merged back [rows, H]: the proj matmul's input. */
  context: tf.Tensor2D;
  ln2: LayerNormSaved;
  normed2: tf.Tensor2D;
  gelu: GeluSaved;
  /** GELU output [rows, 4H]: the fc2 matmul's input. */
  activated: tf.Tensor2D;
  /** Dropout masks (scaled keep-masks) of the sites that dropped, shaped like their activation. */
  probsMask?: tf.Tensor;
  attnOutMask?: tf.Tensor;
  mlpOutMask?: tf.Tensor;
}

function param(params: BlockParams, name: string): tf.Tensor {
  const value = params.get(name);
  if (value === undefined) throw new Error(`block parameter '${name}' missing; got [${[...params.keys()].join(', ')}]`);
  return value;
}

function maskFor(options: BlockForwardOptions, rate: number, site: DropoutSite, perSampleShape: number[]): tf.Tensor | undefined {
  if (rate === 0 || options.dropout === undefined) return undefined;
  if (options.layer === undefined) throw new Error('blockForward: dropout needs options.layer (it keys the masks)');
  return dropoutMask(options.dropout, rate, options.layer, site, perSampleShape);
}

/** x [B, T, H], bias [B, 1, T, T] -> y [B, T, H] and the activations the backward needs. */
export function blockForward(
  params: BlockParams, x: tf.Tensor3D, bias: tf.Tensor4D, config: GPTConfig, options: BlockForwardOptions = {},
): { y: tf.Tensor3D; saved: BlockSaved } {
  return tidyKeep(() => {
    const [batch, seqLen, hidden] = x.shape;
    const heads = config.numAttentionHeads;
    const headDim = hidden / heads;
    const rows = batch * seqLen;
    const eps = config.layerNormEpsilon;
    const x2 = tf.reshape(x, [rows, hidden]) as tf.Tensor2D;

    const ln1 = layerNormForward(x2, param(params, 'ln1.gamma'), param(params, 'ln1.beta'), eps);
    const qkv = tf.reshape(linearForward(ln1.y, param(params, 'attn.qkv.weight'), param(params, 'attn.qkv.bias')), [batch, seqLen, heads, 3 * headDim]);
    const [q, k, v] = tf.split(qkv, 3, 3).map((t) => tf.transpose(t, [0, 2, 1, 3]) as tf.Tensor4D);
    const scores = tf.add(tf.mul(tf.matMul(q, k, false, true), 1 / Math.sqrt(headDim)), bias);
    const probs = tf.softmax(scores) as tf.Tensor4D;
    const probsMask = maskFor(options, config.attnDropRate, DropoutSite.AttentionProbs, [heads, seqLen, seqLen]);
    const dropped = probsMask === undefined ? probs : tf.mul(probs, probsMask);
    const context = tf.reshape(tf.transpose(tf.matMul(dropped, v), [0, 2, 1, 3]), [rows, hidden]) as tf.Tensor2D;
    let attnOut: tf.Tensor = linearForward(context, param(params, 'attn.proj.weight'), param(params, 'attn.proj.bias'));
    const attnOutMask = maskFor(options, config.dropRate, DropoutSite.AttentionOutput, [seqLen, hidden]);
    if (attnOutMask !== undefined) attnOut = tf.mul(attnOut, tf.reshape(attnOutMask, [rows, hidden]));
    const afterAttention = tf.add(x2, attnOut) as tf.Tensor2D;

    const ln2 = layerNormForward(afterAttention, param(params, 'ln2.gamma'), param(params, 'ln2.beta'), eps);
    const fc1 = linearForward(ln2.y, param(params, 'mlp.fc1.weight'), param(params, 'mlp.fc1.bias'));
    const gelu = geluForward(fc1);
    const activated = gelu.y as tf.Tensor2D;
    let mlpOut: tf.Tensor = linearForward(activated, param(params, 'mlp.fc2.weight'), param(params, 'mlp.fc2.bias'));
    const mlpOutMask = maskFor(options, config.dropRate, DropoutSite.MlpOutput, [seqLen, hidden]);
    if (mlpOutMask !== undefined) mlpOut = tf.mul(mlpOut, tf.reshape(mlpOutMask, [rows, hidden]));
    const y = tf.reshape(tf.add(afterAttention, mlpOut), [batch, seqLen, hidden]) as tf.Tensor3D;

    const saved: BlockSaved = {
      batch, seqLen, ln1: ln1.saved, normed1: ln1.y, q, k, v, probs, context,
      ln2: ln2.saved, normed2: ln2.y, gelu: gelu.saved, activated, probsMask, attnOutMask, mlpOutMask,
    };
    return { y, saved };
  });
}

/**
 * dy [B, T, H] (gradient of the block's output) -> dx [B, T, H] and every parameter's gradient by local
 * name. Reads `saved` without disposing it.
 */
export function blockBackward(
  params: BlockParams, saved: BlockSaved, dy: tf.Tensor3D, config: GPTConfig,
): { dx: tf.Tensor3D; grads: Map<string, tf.Tensor> } {
  const result = tidyKeep(() => {
    const { batch, seqLen } = saved;
    const hidden = config.hiddenSize;
    const heads = config.numAttentionHeads;
    const headDim = hidden / heads;
    const rows = batch * seqLen;
    const dy2 = tf.reshape(dy, [rows, hidden]) as tf.Tensor2D;
    const grads: Record<string, tf.Tensor> = {};

    // MLP branch: y = afterAttention + drop(fc2(gelu(fc1(ln2(afterAttention))))).
    const dMlpOut = saved.mlpOutMask === undefined ? dy2 : (tf.mul(dy2, tf.reshape(saved.mlpOutMask, [rows, hidden])) as tf.Tensor2D);
    const fc2 = linearBackward(dMlpOut, saved.activated, param(params, 'mlp.fc2.weight'));
    grads['mlp.fc2.weight'] = fc2.dweight;
    grads['mlp.fc2.bias'] = fc2.dbias;
    const dFc1 = geluBackward(fc2.dx, saved.gelu) as tf.Tensor2D;
    const fc1 = linearBackward(dFc1, saved.normed2, param(params, 'mlp.fc1.weight'));
    grads['mlp.fc1.weight'] = fc1.dweight;
    grads['mlp.fc1.bias'] = fc1.dbias;
    const ln2 = layerNormBackward(fc1.dx, saved.ln2, param(params, 'ln2.gamma'));
    grads['ln2.gamma'] = ln2.dgamma;
    grads['ln2.beta'] = ln2.dbeta;
    const dAfterAttention = tf.add(dy2, ln2.dx) as tf.Tensor2D;

    // Attention branch: afterAttention = x + drop(proj(attention(qkv(ln1(x))))).
    const dAttnOut = saved.attnOutMask === undefined
      ? dAfterAttention
      : (tf.mul(dAfterAttention, tf.reshape(saved.attnOutMask, [rows, hidden])) as tf.Tensor2D);
    const proj = linearBackward(dAttnOut, saved.context, param(params, 'attn.proj.weight'));
    grads['attn.proj.weight'] = proj.dweight;
    grads['attn.proj.bias'] = proj.dbias;
    const dContext = tf.transpose(tf.reshape(proj.dx, [batch, seqLen, heads, headDim]), [0, 2, 1, 3]) as tf.Tensor4D;
    const dropped = saved.probsMask === undefined ? saved.probs : (tf.mul(saved.probs, saved.probsMask) as tf.Tensor4D);
    const dDropped = tf.matMul(dContext, saved.v, false, true);
    const dv = tf.matMul(dropped, dContext, true, false);
    const dProbs = saved.probsMask === undefined ? dDropped : tf.mul(dDropped, saved.probsMask);
    // scores = q k^T * scale + bias; the bias is a constant.
    const dScores = tf.mul(softmaxBackward(dProbs, saved.probs), 1 / Math.sqrt(headDim)) as tf.Tensor4D;
    const dq = tf.matMul(dScores, saved.k);
    const dk = tf.matMul(dScores, saved.q, true, false);
    // Undo the split and the head transpose in one 4-D transpose: [B, heads, T, q|k|v] -> [B, T, heads, 3 headDim].
    const dQkv = tf.reshape(tf.transpose(tf.concat([dq, dk, dv], 3), [0, 2, 1, 3]), [rows, 3 * hidden]) as tf.Tensor2D;
    const qkv = linearBackward(dQkv, saved.normed1, param(params, 'attn.qkv.weight'));
    grads['attn.qkv.weight'] = qkv.dweight;
    grads['attn.qkv.bias'] = qkv.dbias;
    const ln1 = layerNormBackward(qkv.dx, saved.ln1, param(params, 'ln1.gamma'));
    grads['ln1.gamma'] = ln1.dgamma;
    grads['ln1.beta'] = ln1.dbeta;
    const dx = tf.reshape(tf.add(dAfterAttention, ln1.dx), [batch, seqLen, hidden]) as tf.Tensor3D;
    return { dx, grads };
  });
  return { dx: result.dx, grads: new Map(BLOCK_PARAM_NAMES.map((name) => [name, result.grads[name]!])) };
}

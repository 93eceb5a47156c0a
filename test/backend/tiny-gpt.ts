/**
 * Implements: a small GPT training loss built only from tfjs ops, as a workload for backend
 * checks: the kernels a training step runs (embedding gather and its UnsortedSegmentSum
 * gradient, LayerNorm from moments, 2-D and batched matmuls, split + [0,2,1,3] transposes,
 * softmax, tanh GELU, logSoftmax cross-entropy). Independent of src/model on purpose: it tests
 * the backend, not the model.
 */
import * as tf from '../../src/tf.ts';
import { randomValues } from './compare.ts';

export interface TinyGptShape {
  vocab: number;
  hidden: number;
  heads: number;
  layers: number;
  seqLen: number;
  batch: number;
}

/** Parameters as plain arrays, so each backend builds its own tensors from the same values. */
export function tinyGptParams(shape: TinyGptShape, seed: number): Map<string, { values: Float32Array; shape: number[] }> {
  const { vocab, hidden, layers, seqLen } = shape;
  const params = new Map<string, { values: Float32Array; shape: number[] }>();
  let counter = seed;
  const add = (name: string, dims: number[], scale: number, offset = 0) => {
    const values = randomValues(dims.reduce((x, y) => x * y, 1), counter++).map((v) => v * scale + offset);
    params.set(name, { values, shape: dims });
  };
  add('wte', [vocab, hidden], 0.2);
  add('wpe', [seqLen, hidden], 0.1);
  for (let l = 0; l < layers; l++) {
    add(`h${l}.ln1.g`, [hidden], 0.1, 1);
    add(`h${l}.ln1.b`, [hidden], 0.1);
    add(`h${l}.qkv.w`, [hidden, 3 * hidden], 0.2);
    add(`h${l}.qkv.b`, [3 * hidden], 0.02);
    add(`h${l}.proj.w`, [hidden, hidden], 0.2);
    add(`h${l}.proj.b`, [hidden], 0.02);
    add(`h${l}.ln2.g`, [hidden], 0.1, 1);
    add(`h${l}.ln2.b`, [hidden], 0.1);
    add(`h${l}.fc.w`, [hidden, 4 * hidden], 0.2);
    add(`h${l}.fc.b`, [4 * hidden], 0.02);
    add(`h${l}.out.w`, [4 * hidden, hidden], 0.1);
    add(`h${l}.out.b`, [hidden], 0.02);
  }
  add('lnf.g', [hidden], 0.1, 1);
  add('lnf.b', [hidden], 0.1);
  return params;
}

function layerNorm(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor): tf.Tensor {
  const { mean, variance } = tf.moments(x, -1, true);
  return tf.add(tf.mul(tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, 1e-5))), gamma), beta);
}

function gelu(x: tf.Tensor): tf.Tensor {
  const inner = tf.mul(tf.add(x, tf.mul(tf.mul(tf.mul(x, x), x), 0.044715)), Math.sqrt(2 / Math.PI));
  return tf.mul(tf.mul(x, 0.5), tf.add(tf.tanh(inner), 1));
}

/** Causal additive mask [T, T], a constant (a `where` on variables would have no gradient). */
function causalBias(seqLen: number): tf.Tensor {
  const values = new Float32Array(seqLen * seqLen);
  for (let q = 0; q < seqLen; q++) for (let k = q + 1; k < seqLen; k++) values[q * seqLen + k] = -1e4;
  return tf.tensor(values, [seqLen, seqLen]);
}

/** Mean next-token cross-entropy of the model on `ids` (int32 [batch, seqLen]). */
export function tinyGptLoss(shape: TinyGptShape, p: Map<string, tf.Tensor>, ids: tf.Tensor2D): tf.Scalar {
  const { vocab, hidden, heads, layers, seqLen, batch } = shape;
  const headDim = hidden / heads;
  const rows = batch * seqLen;
  const get = (name: string) => p.get(name)!;
  // (B*T, C): rows folded so weight matmuls are 2-D.
  let x = tf.add(tf.reshape(tf.gather(get('wte'), tf.reshape(ids, [rows])), [batch, seqLen, hidden]), get('wpe'));
  x = tf.reshape(x, [rows, hidden]);
  const bias = causalBias(seqLen);
  for (let l = 0; l < layers; l++) {
    const normed = layerNorm(x, get(`h${l}.ln1.g`), get(`h${l}.ln1.b`));
    const qkv = tf.add(tf.matMul(normed, get(`h${l}.qkv.w`)), get(`h${l}.qkv.b`)); // (B*T, 3C)
    const [q, k, v] = tf.split(tf.reshape(qkv, [batch, seqLen, 3, heads, headDim]), 3, 2)
      .map((t) => tf.transpose(tf.reshape(t, [batch, seqLen, heads, headDim]), [0, 2, 1, 3])); // (B, nh, T, hd)
    const scores = tf.add(tf.mul(tf.matMul(q!, k!, false, true), 1 / Math.sqrt(headDim)), bias); // (B, nh, T, T)
    const context = tf.matMul(tf.softmax(scores), v!); // (B, nh, T, hd)
    const merged = tf.reshape(tf.transpose(context, [0, 2, 1, 3]), [rows, hidden]);
    x = tf.add(x, tf.add(tf.matMul(merged, get(`h${l}.proj.w`)), get(`h${l}.proj.b`)));
    const normed2 = layerNorm(x, get(`h${l}.ln2.g`), get(`h${l}.ln2.b`));
    const up = gelu(tf.add(tf.matMul(normed2, get(`h${l}.fc.w`)), get(`h${l}.fc.b`)));
    x = tf.add(x, tf.add(tf.matMul(up, get(`h${l}.out.w`)), get(`h${l}.out.b`)));
  }
  const logits = tf.matMul(layerNorm(x, get('lnf.g'), get('lnf.b')), get('wte'), false, true); // (B*T, V), tied head
  // Position t predicts token t+1; the last position of each row predicts nothing.
  const logProbs = tf.reshape(tf.logSoftmax(logits), [batch, seqLen, vocab]);
  const predicting = tf.slice(logProbs, [0, 0, 0], [batch, seqLen - 1, vocab]);
  const targets = tf.slice(ids, [0, 1], [batch, seqLen - 1]);
  // oneHot in float32 returns int32 bit patterns on wasm (MEASURED.md): cast an int32 one.
  const oneHot = tf.cast(tf.oneHot(targets, vocab), 'float32');
  return tf.neg(tf.div(tf.sum(tf.mul(predicting, oneHot)), batch * (seqLen - 1))) as tf.Scalar;
}

export function tinyGptIds(shape: TinyGptShape, seed: number): Int32Array {
  return Int32Array.from(randomValues(shape.batch * shape.seqLen, seed), (v) => Math.floor((v + 1) / 2 * shape.vocab));
}

/**
 * Implements: the GPT parameter table (llm.c's ParameterTensors idea): every parameter's global name,
 * FULL shape and initializer, and which of them a model slice (a pipeline stage's range of layers)
 * holds. Initialization, counting, checkpoints and gradient buffers are all driven from this table.
 *
 * Layout decisions that later tensor parallelism relies on:
 * - Linear weights are stored [in, out] so y = x @ W; a column-parallel shard is a column range and a
 *   row-parallel shard a row range.
 * - The fused QKV weight's columns are grouped per head, [head][q|k|v][headDim] (Megatron's layout),
 *   so the heads of one tensor-parallel shard are one contiguous column range.
 */
import type { GPTConfig } from './config.ts';
import { hashString, normalAt } from './rng.ts';

export type Initializer = { kind: 'normal'; std: number } | { kind: 'zeros' } | { kind: 'ones' };

export interface ParamSpec {
  /** Global name, the same on every rank and in every layout. */
  name: string;
  shape: number[];
  init: Initializer;
}

/** A contiguous range of blocks, with or without the embedding (first stage) and final norm + head (last stage). */
export interface ModelSlice {
  startLayer: number;
  endLayer: number;
  hasEmbedding: boolean;
  hasHead: boolean;
}

export function fullModelSlice(config: GPTConfig): ModelSlice {
  return { startLayer: 0, endLayer: config.numLayers, hasEmbedding: true, hasHead: true };
}

/** ColossalAI's convention: a layer range starting at 0 holds the embedding, one ending at numLayers the head. */
export function sliceForLayers(config: GPTConfig, startLayer: number, endLayer: number): ModelSlice {
  return { startLayer, endLayer, hasEmbedding: startLayer === 0, hasHead: endLayer === config.numLayers };
}

export const WORD_EMBEDDING = 'embedding.wordEmbeddings';
export const POSITION_EMBEDDING = 'embedding.positionEmbeddings';

export function blockParamName(layer: number, local: string): string {
  return `blocks.${layer}.${local}`;
}

const INIT_STD = 0.02;

function blockParams(config: GPTConfig, layer: number): ParamSpec[] {
  const h = config.hiddenSize;
  const ffn = config.mlpRatio * h;
  // GPT-2 scales the init of the projections that write into the residual stream by 1/sqrt(2 * layers).
  const residualStd = INIT_STD / Math.sqrt(2 * config.numLayers);
  const spec = (local: string, shape: number[], init: Initializer): ParamSpec => ({
    name: blockParamName(layer, local),
    shape,
    init,
  });
  return [
    spec('ln1.gamma', [h], { kind: 'ones' }),
    spec('ln1.beta', [h], { kind: 'zeros' }),
    spec('attn.qkv.weight', [h, 3 * h], { kind: 'normal', std: INIT_STD }),
    spec('attn.qkv.bias', [3 * h], { kind: 'zeros' }),
    spec('attn.proj.weight', [h, h], { kind: 'normal', std: residualStd }),
    spec('attn.proj.bias', [h], { kind: 'zeros' }),
    spec('ln2.gamma', [h], { kind: 'ones' }),
    spec('ln2.beta', [h], { kind: 'zeros' }),
    spec('mlp.fc1.weight', [h, ffn], { kind: 'normal', std: INIT_STD }),
    spec('mlp.fc1.bias', [ffn], { kind: 'zeros' }),
    spec('mlp.fc2.weight', [ffn, h], { kind: 'normal', std: residualStd }),
    spec('mlp.fc2.bias', [h], { kind: 'zeros' }),
  ];
}

/**
 * The parameters a slice holds, in a fixed order. The word embedding is tied to the LM head: a slice
 * with both holds it once; a last pipeline stage without the embedding holds its own copy under the
 * same global name, which therefore starts identical (the SharedWeight actor keeps it so).
 */
export function paramsForSlice(config: GPTConfig, slice: ModelSlice): ParamSpec[] {
  const h = config.hiddenSize;
  const params: ParamSpec[] = [];
  if (slice.hasEmbedding || slice.hasHead) {
    params.push({ name: WORD_EMBEDDING, shape: [config.vocabSize, h], init: { kind: 'normal', std: INIT_STD } });
  }
  if (slice.hasEmbedding) {
    params.push({
      name: POSITION_EMBEDDING,
      shape: [config.maxPositionEmbeddings, h],
      init: { kind: 'normal', std: INIT_STD },
    });
  }
  for (let layer = slice.startLayer; layer < slice.endLayer; layer++) params.push(...blockParams(config, layer));
  if (slice.hasHead) {
    params.push({ name: 'norm.gamma', shape: [h], init: { kind: 'ones' } });
    params.push({ name: 'norm.beta', shape: [h], init: { kind: 'zeros' } });
  }
  return params;
}

export function numElements(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function countParameters(config: GPTConfig): number {
  return countSliceParameters(config, fullModelSlice(config));
}

export function countSliceParameters(config: GPTConfig, slice: ModelSlice): number {
  return paramsForSlice(config, slice).reduce((n, p) => n + numElements(p.shape), 0);
}

/** A rectangular region of a parameter, as tf.slice takes it. Omitted: the whole tensor. */
export interface Region {
  begin: number[];
  size: number[];
}

/**
 * The initial values of `region` of parameter `spec`, for the run's seed. Element values depend only on
 * (seed, name, index in the FULL tensor), so any region equals the same region of the full tensor.
 */
export function initialValues(spec: ParamSpec, seed: number, region?: Region): Float32Array {
  const shape = spec.shape;
  const begin = region?.begin ?? shape.map(() => 0);
  const size = region?.size ?? shape.slice();
  if (begin.length !== shape.length || size.length !== shape.length) {
    throw new Error(`region rank ${begin.length}/${size.length} does not match ${spec.name} of shape [${shape}]`);
  }
  shape.forEach((dim, axis) => {
    if (begin[axis] < 0 || size[axis] < 0 || begin[axis] + size[axis] > dim) {
      throw new Error(`region [${begin}]+[${size}] is outside ${spec.name} of shape [${shape}]`);
    }
  });
  const out = new Float32Array(numElements(size));
  if (spec.init.kind === 'zeros') return out;
  if (spec.init.kind === 'ones') return out.fill(1);
  const { std } = spec.init;
  const key = hashString(spec.name, seed);
  // Row-major strides of the full tensor, to turn a region coordinate into a global element index.
  const strides = shape.map((_, axis) => numElements(shape.slice(axis + 1)));
  const rank = shape.length;
  const coord = new Array<number>(rank).fill(0);
  const innerSize = size[rank - 1];
  for (let written = 0; written < out.length; written += innerSize) {
    let base = 0;
    for (let axis = 0; axis < rank; axis++) base += (begin[axis] + coord[axis]) * strides[axis];
    for (let j = 0; j < innerSize; j++) out[written + j] = std * normalAt(key, base + j);
    // Odometer increment over all axes but the innermost.
    for (let axis = rank - 2; axis >= 0; axis--) {
      if (++coord[axis] < size[axis]) break;
      coord[axis] = 0;
    }
  }
  return out;
}

/**
 * Implements: the Hugging Face GPT-2 format (`GPT2LMHeadModel`'s `model.safetensors` and `config.json`)
 * against this project's parameters, both ways. GPT-2 names its tensors `transformer.wte.weight`,
 * `transformer.h.N.attn.c_attn.weight`, ...; its linear layers are Conv1D, weights [in, out], as ours
 * are; the LM head is tied to `wte` and not stored. One layout differs: GPT-2's c_attn columns are
 * [all heads' q | all heads' k | all heads' v], ours are grouped per head, [head][q|k|v][headDim]
 * (model/params.ts: a tensor-parallel rank's columns are then whole heads), so c_attn's weight and bias
 * columns are permuted on the way. The hub's own gpt2 files name tensors without `transformer.` and
 * carry the causal-mask buffers `h.N.attn.bias` / `h.N.attn.masked_bias`: both are read, the buffers skipped.
 */
import type { GPTConfig } from '../model/config.ts';
import { POSITION_EMBEDDING, WORD_EMBEDDING } from '../model/params.ts';

/** GPT-2's name (with `transformer.`) of each parameter that maps one to one. */
const BLOCK_NAMES: Record<string, string> = {
  'ln1.gamma': 'ln_1.weight',
  'ln1.beta': 'ln_1.bias',
  'attn.qkv.weight': 'attn.c_attn.weight',
  'attn.qkv.bias': 'attn.c_attn.bias',
  'attn.proj.weight': 'attn.c_proj.weight',
  'attn.proj.bias': 'attn.c_proj.bias',
  'ln2.gamma': 'ln_2.weight',
  'ln2.beta': 'ln_2.bias',
  'mlp.fc1.weight': 'mlp.c_fc.weight',
  'mlp.fc1.bias': 'mlp.c_fc.bias',
  'mlp.fc2.weight': 'mlp.c_proj.weight',
  'mlp.fc2.bias': 'mlp.c_proj.bias',
};

/** Our global parameter name -> GPT-2's. */
export function hfNameOf(name: string): string {
  if (name === WORD_EMBEDDING) return 'transformer.wte.weight';
  if (name === POSITION_EMBEDDING) return 'transformer.wpe.weight';
  if (name === 'norm.gamma') return 'transformer.ln_f.weight';
  if (name === 'norm.beta') return 'transformer.ln_f.bias';
  const block = /^blocks\.(\d+)\.(.+)$/.exec(name);
  const local = block === null ? undefined : BLOCK_NAMES[block[2]!];
  if (block === null || local === undefined) throw new Error(`no GPT-2 name for parameter ${name}`);
  return `transformer.h.${block[1]}.${local}`;
}

/** Whether a GPT-2 tensor is a buffer, not a parameter (the causal mask of older files). */
export function isHfBuffer(hfName: string): boolean {
  return /(^|\.)h\.\d+\.attn\.(bias|masked_bias)$/.test(hfName);
}

/**
 * c_attn's columns from our per-head grouping to GPT-2's (toHf) or back: `values` is [rows, 3H] row-major
 * (rows = 1 for the bias), for `heads` heads.
 */
export function permuteQkvColumns(values: Float32Array, hidden: number, heads: number, toHf: boolean): Float32Array {
  const width = 3 * hidden;
  const headDim = hidden / heads;
  if (values.length % width !== 0) throw new Error(`c_attn has ${values.length} values, not a multiple of 3 x hidden (${width})`);
  const out = new Float32Array(values.length);
  for (let row = 0; row < values.length / width; row++) {
    const base = row * width;
    for (let head = 0; head < heads; head++) {
      for (let part = 0; part < 3; part++) {
        const ours = base + head * 3 * headDim + part * headDim;
        const theirs = base + part * hidden + head * headDim;
        if (toHf) out.set(values.subarray(ours, ours + headDim), theirs);
        else out.set(values.subarray(theirs, theirs + headDim), ours);
      }
    }
  }
  return out;
}

/** A parameter's values in GPT-2's layout (toHf) or back from it: a copy where the layouts differ (c_attn). */
export function hfLayoutValues(name: string, values: Float32Array, model: GPTConfig, toHf: boolean): Float32Array {
  return name.endsWith('attn.qkv.weight') || name.endsWith('attn.qkv.bias') ? permuteQkvColumns(values, model.hiddenSize, model.numAttentionHeads, toHf) : values;
}

/** The tanh approximation GPT-2 trained with, under the names Hugging Face gives it (its "gelu" is the exact one). */
export const TANH_GELU_NAMES = ['gelu_new', 'gelu_pytorch_tanh', 'gelu_fast'] as const;

/** GPT-2's config.json for a model (GPT2Config's keys). */
export function hfConfigOf(model: GPTConfig): Record<string, unknown> {
  const inner = Math.round(model.mlpRatio * model.hiddenSize);
  return {
    architectures: ['GPT2LMHeadModel'],
    model_type: 'gpt2',
    vocab_size: model.vocabSize,
    n_positions: model.maxPositionEmbeddings,
    n_ctx: model.maxPositionEmbeddings,
    n_embd: model.hiddenSize,
    n_layer: model.numLayers,
    n_head: model.numAttentionHeads,
    n_inner: inner === 4 * model.hiddenSize ? null : inner,
    // GPT-2's tanh approximation is Hugging Face's gelu_new; its "gelu" is the exact (erf) one.
    activation_function: model.activation === 'gelu' ? 'gelu' : 'gelu_new',
    resid_pdrop: model.dropRate,
    embd_pdrop: model.embedDropRate,
    attn_pdrop: model.attnDropRate,
    layer_norm_epsilon: model.layerNormEpsilon,
    initializer_range: 0.02,
    // <|endoftext|> (dataset/tokenizer.ts's EOS_TOKEN_ID, not imported: that module loads the BPE ranks).
    bos_token_id: 50256,
    eos_token_id: 50256,
    tie_word_embeddings: true,
    torch_dtype: 'float32',
  };
}

/** The model keys (as a config's `model` section takes them) of a GPT-2 config.json; throws naming what does not fit. */
export function modelKeysOfHf(hf: unknown, source: string): Record<string, number | string> {
  if (typeof hf !== 'object' || hf === null || Array.isArray(hf)) throw new Error(`${source}: config.json is not a JSON object`);
  const config = hf as Record<string, unknown>;
  if (config.model_type !== undefined && config.model_type !== 'gpt2') throw new Error(`${source}: model_type is ${JSON.stringify(config.model_type)}; only GPT-2 ("gpt2") converts`);
  const activationFunction = config.activation_function ?? 'gelu_new';
  const tanh = (TANH_GELU_NAMES as readonly unknown[]).includes(activationFunction);
  if (!tanh && activationFunction !== 'gelu') {
    throw new Error(`${source}: activation_function ${JSON.stringify(activationFunction)}; this model computes GELU, exact ("gelu") or GPT-2's tanh approximation (${TANH_GELU_NAMES.join(', ')})`);
  }
  const integer = (key: string, fallback?: number): number => {
    const value = config[key] ?? fallback;
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) throw new Error(`${source}: config.json's ${key} must be a positive integer, got ${JSON.stringify(config[key])}`);
    return value;
  };
  const rate = (key: string): number => {
    const value = config[key] ?? 0;
    if (typeof value !== 'number' || !(value >= 0 && value < 1)) throw new Error(`${source}: config.json's ${key} must be a number in [0, 1), got ${JSON.stringify(value)}`);
    return value;
  };
  const hidden = integer('n_embd');
  const inner = config.n_inner === null || config.n_inner === undefined ? 4 * hidden : integer('n_inner');
  const epsilon = config.layer_norm_epsilon ?? 1e-5;
  if (typeof epsilon !== 'number' || !(epsilon > 0)) throw new Error(`${source}: config.json's layer_norm_epsilon must be a number > 0, got ${JSON.stringify(epsilon)}`);
  return {
    numLayers: integer('n_layer'),
    hiddenSize: hidden,
    numAttentionHeads: integer('n_head'),
    vocabSize: integer('vocab_size'),
    maxPositionEmbeddings: integer('n_positions', typeof config.n_ctx === 'number' ? config.n_ctx : undefined),
    mlpRatio: inner / hidden,
    embedDropRate: rate('embd_pdrop'),
    attnDropRate: rate('attn_pdrop'),
    dropRate: rate('resid_pdrop'),
    layerNormEpsilon: epsilon,
    activation: tanh ? 'gelu_tanh' : 'gelu',
  };
}

/** The names a GPT-2 file may give our parameter: with `transformer.` (GPT2LMHeadModel) or without (the hub's gpt2). */
export function hfNameCandidates(name: string): string[] {
  const full = hfNameOf(name);
  return [full, full.slice('transformer.'.length)];
}


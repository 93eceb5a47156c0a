/**
 * Implements: the GPT model configuration (the seed's knobs) and its presets.
 * A preset supplies defaults; keys written explicitly in a config override it.
 */

export interface GPTConfig {
  numLayers: number;
  hiddenSize: number;
  numAttentionHeads: number;
  /** 50304 = GPT-2's 50257 rounded up to a multiple of 64 (Megatron pads the same way). */
  vocabSize: number;
  maxPositionEmbeddings: number;
  mlpRatio: number;
  embedDropRate: number;
  attnDropRate: number;
  dropRate: number;
  layerNormEpsilon: number;
  /** Activation checkpointing: backward recomputes a block's forward instead of keeping it. */
  checkpoint: boolean;
  /** The MLP's GELU: exact (erf, the seed's F.gelu) or GPT-2's tanh approximation (Hugging Face's gelu_new). */
  activation: Activation;
}

export const ACTIVATIONS = ['gelu', 'gelu_tanh'] as const;
export type Activation = (typeof ACTIVATIONS)[number];

export const MODEL_DEFAULTS: GPTConfig = {
  numLayers: 12,
  hiddenSize: 768,
  numAttentionHeads: 12,
  vocabSize: 50304,
  maxPositionEmbeddings: 1024,
  mlpRatio: 4,
  embedDropRate: 0,
  attnDropRate: 0,
  dropRate: 0,
  layerNormEpsilon: 1e-5,
  checkpoint: false,
  activation: 'gelu_tanh',
};

export const MODEL_PRESETS: Record<string, Partial<GPTConfig>> = {
  /** Small enough to train in seconds on two cores; used by tests and the demo. GPT-2's tanh GELU, as gpt2-small. */
  tiny: { numLayers: 4, hiddenSize: 64, numAttentionHeads: 4, maxPositionEmbeddings: 256 },
  'gpt2-small': { numLayers: 12, hiddenSize: 768, numAttentionHeads: 12 },
  /** The seed tutorial's GPT2_exlarge_pipeline_hybrid; its blocks use F.gelu, the exact GELU. */
  'gpt2-exlarge': { numLayers: 48, hiddenSize: 1600, numAttentionHeads: 32, activation: 'gelu' },
  /** The seed tutorial's GPT3_pipeline_hybrid (exact GELU, as the seed's blocks). */
  gpt3: { numLayers: 96, hiddenSize: 12288, numAttentionHeads: 96, maxPositionEmbeddings: 2048, activation: 'gelu' },
};

export type ModelConfigInput = Partial<GPTConfig> & { preset?: string };

/** Defaults, then the preset, then explicit keys. Validation lives in src/config/. */
export function resolveModelConfig(input: ModelConfigInput): GPTConfig {
  const { preset, ...explicit } = input;
  const presetValues = preset === undefined ? {} : MODEL_PRESETS[preset];
  if (presetValues === undefined) {
    throw new Error(`unknown model.preset "${preset}"; choose one of: ${Object.keys(MODEL_PRESETS).join(', ')}`);
  }
  return { ...MODEL_DEFAULTS, ...presetValues, ...explicit };
}

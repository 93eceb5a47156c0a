/**
 * Implements: the table of every key a training config may hold: its type, range, default and a
 * one-line description. Validation (resolve.ts), "did you mean" and the CLI's key list all read this
 * one table, so a key added here is checked, suggested and documented at once.
 */
import { BACKEND_NAMES } from '../backend/names.ts';
import { ACTIVATIONS, MODEL_DEFAULTS, MODEL_PRESETS } from '../model/config.ts';
import { SCHEDULE_KINDS } from '../scheduler/ops.ts';
import { LR_SCHEDULES } from '../train/lr-schedule.ts';
import type { TrainConfig } from './types.ts';

/** An interval of allowed numbers; a missing bound is unbounded. */
export interface NumberRange {
  min?: number;
  minExclusive?: boolean;
  max?: number;
  maxExclusive?: boolean;
}

export type FieldSpec =
  | { kind: 'integer'; range: NumberRange; doc: string }
  | { kind: 'number'; range: NumberRange; doc: string }
  | { kind: 'boolean'; doc: string }
  | { kind: 'string'; doc: string }
  | { kind: 'enum'; values: readonly string[]; doc: string }
  | { kind: 'section'; fields: Readonly<Record<string, FieldSpec>>; doc: string };

export type SectionSpec = Extract<FieldSpec, { kind: 'section' }>;

const POSITIVE: NumberRange = { min: 1 };
const NON_NEGATIVE: NumberRange = { min: 0 };
const ABOVE_ZERO: NumberRange = { min: 0, minExclusive: true };
/** Dropout rates and Adam's betas: 1 would drop everything / never forget. */
const UNIT_HALF_OPEN: NumberRange = { min: 0, max: 1, maxExclusive: true };

const positiveInt = (doc: string): FieldSpec => ({ kind: 'integer', range: POSITIVE, doc });

/** Rates and betas share a range; named so the table reads as a table. */
const rate = (doc: string): FieldSpec => ({ kind: 'number', range: UNIT_HALF_OPEN, doc });

export const MODEL_SCHEMA: SectionSpec = {
  kind: 'section',
  doc: 'the GPT model: a preset, then explicit keys',
  fields: {
    preset: { kind: 'enum', values: Object.keys(MODEL_PRESETS), doc: 'where model keys start; explicit ones win' },
    numLayers: positiveInt('transformer blocks'),
    hiddenSize: positiveInt('width of the residual stream; divisible by numAttentionHeads'),
    numAttentionHeads: positiveInt('attention heads per block'),
    vocabSize: positiveInt('embedding rows; at least 50257 for the GPT-2 tokenizer'),
    maxPositionEmbeddings: positiveInt('longest sequence the model can see; >= seqLen'),
    mlpRatio: { kind: 'number', range: ABOVE_ZERO, doc: 'MLP width = hiddenSize x mlpRatio' },
    embedDropRate: rate('dropout after the embeddings, in [0, 1)'),
    attnDropRate: rate('dropout on attention weights, in [0, 1)'),
    dropRate: rate('dropout on block outputs, in [0, 1)'),
    layerNormEpsilon: { kind: 'number', range: ABOVE_ZERO, doc: 'LayerNorm epsilon' },
    checkpoint: { kind: 'boolean', doc: 'recompute activations in backward to save memory' },
    activation: { kind: 'enum', values: ACTIVATIONS, doc: 'the MLP\'s GELU: gelu (exact, erf: the seed\'s) or gelu_tanh (GPT-2\'s, Hugging Face\'s gelu_new)' },
  },
};

export const TRAIN_SCHEMA: SectionSpec = {
  kind: 'section',
  doc: 'a training job',
  fields: {
    model: MODEL_SCHEMA,
    parallel: {
      kind: 'section',
      doc: 'how ranks split the work; world size = pipeline x tensor.size x data',
      fields: {
        pipeline: positiveInt('pipeline stages'),
        tensor: {
          kind: 'section',
          doc: 'tensor (Megatron 1D) parallelism',
          fields: {
            mode: { kind: 'enum', values: ['1d'], doc: 'Megatron-style 1D splits (the only mode so far)' },
            size: positiveInt('ranks sharing each layer'),
          },
        },
        data: positiveInt('data-parallel replicas, or "auto": world / (pipeline x tensor.size), the world being --nnodes x --nproc-per-node'),
        overlapGradReduce: {
          kind: 'boolean',
          doc: "data parallel: all-reduce gradient buckets as the step's last backward finishes them (Megatron's --overlap-grad-reduce); default true, false reduces everything after the backward",
        },
      },
    },
    numMicroBatches: positiveInt('micro-batches per step; divides batchSize'),
    numChunks: positiveInt('model chunks per pipeline stage (interleaved 1F1B when > 1; zbv needs 2)'),
    schedule: {
      kind: 'enum',
      values: SCHEDULE_KINDS,
      doc:
        'pipeline schedule: GPipe, Megatron 1F1B, interleaved 1F1B with numChunks chunks per stage (the default when numChunks > 1), ' +
        'or zero bubble (backward split into input and weight gradients): zb-h1 (1F1B\'s memory, a third of its bubble), zbv (numChunks 2 in a V) or auto-zb (zb-h1 for 2 steps, then W placed from the measured op times)',
    },
    partition: {
      kind: 'enum',
      values: ['uniform', 'balanced'],
      doc: 'layers per pipeline stage: uniform counts (ColossalAI) or balanced cost, fewer blocks beside the embedding and the LM head',
    },
    batchSize: positiveInt('samples per data-parallel rank per step'),
    gradientAccumulation: positiveInt('steps whose gradients add up before one optimizer update'),
    seqLen: positiveInt('tokens per sample'),
    epochs: positiveInt('passes over the data (give epochs or steps, not both)'),
    steps: positiveInt('optimizer steps to run (give epochs or steps, not both)'),
    optimizer: {
      kind: 'section',
      doc: 'the optimizer',
      fields: {
        kind: { kind: 'enum', values: ['adam', 'adamw'], doc: 'adam adds weight decay to the gradient (torch.optim.Adam), adamw decouples it' },
        lr: { kind: 'number', range: ABOVE_ZERO, doc: 'peak learning rate, > 0 (see schedule)' },
        schedule: {
          kind: 'enum',
          values: LR_SCHEDULES,
          doc: 'learning rate after warmup (Megatron\'s decay styles): constant, linear or cosine decay to minLr at decaySteps, or inverse-square-root',
        },
        warmupSteps: { kind: 'integer', range: NON_NEGATIVE, doc: 'steps of linear warmup from 0 to lr; 0: none' },
        minLr: { kind: 'number', range: NON_NEGATIVE, doc: 'the learning rate linear and cosine decay end at, and inverse-square-root\'s floor; <= lr' },
        decaySteps: positiveInt('the step where linear and cosine decay reach minLr (default: the run\'s steps)'),
        beta1: rate('first-moment decay, in [0, 1)'),
        beta2: rate('second-moment decay, in [0, 1)'),
        eps: { kind: 'number', range: ABOVE_ZERO, doc: 'denominator epsilon' },
        weightDecay: { kind: 'number', range: NON_NEGATIVE, doc: 'weight decay, >= 0' },
        gradClip: { kind: 'number', range: NON_NEGATIVE, doc: 'global gradient-norm clip; 0 disables' },
      },
    },
    data: {
      kind: 'section',
      doc: 'the training text',
      fields: {
        path: { kind: 'string', doc: 'JSONL file, one {"text": ...} per line (required)' },
        validPath: { kind: 'string', doc: 'JSONL file of held-out text for validation (not with validFraction)' },
        validFraction: rate('share of data.path\'s samples held out for validation, spread evenly through the file, never trained on; 0: none'),
        skipBadLines: { kind: 'boolean', doc: 'count and skip malformed lines instead of failing' },
        shuffle: { kind: 'boolean', doc: 'seeded shuffle of the samples' },
        dropLast: { kind: 'boolean', doc: 'drop the last incomplete batch' },
      },
    },
    // A seed feeds 32-bit hashes (model/rng.ts): larger values would alias smaller ones.
    seed: { kind: 'integer', range: { min: 0, max: 0xffffffff }, doc: 'seed of every random stream' },
    backend: {
      kind: 'enum',
      values: BACKEND_NAMES,
      doc: 'compute backend; omitted: the fastest installed',
    },
    logInterval: positiveInt('print metrics every this many steps'),
    checkpoint: {
      kind: 'section',
      doc: 'checkpoints in <run folder>/checkpoints (a folder per step, a latest pointer)',
      fields: {
        every: { kind: 'integer', range: NON_NEGATIVE, doc: 'save every this many steps and at the end of the run; 0: only when asked (ctl checkpoint)' },
        keep: positiveInt('checkpoints kept (the oldest are pruned)'),
      },
    },
    eval: {
      kind: 'section',
      doc: 'validation loss and perplexity during training (needs data.validPath or data.validFraction)',
      fields: {
        every: { kind: 'integer', range: NON_NEGATIVE, doc: 'evaluate every this many steps and at the end of the run; 0: only at the end' },
        batches: positiveInt('global batches evaluated each time (default: every whole global batch of the validation data)'),
      },
    },
    comm: {
      kind: 'section',
      doc: 'how ranks exchange tensors',
      fields: {
        dataPlane: {
          kind: 'enum',
          values: ['tcp', 'nats'],
          doc: 'tcp: direct links between ranks, NATS for control only (a rank that cannot be reached falls back to NATS, logged); nats: tensors through the broker too',
        },
        wirePrecision: {
          kind: 'enum',
          values: ['float32', 'float16', 'bfloat16'],
          doc: 'how pipeline activations and their gradients travel: float16 or bfloat16 halve the bytes at that precision (fp16 mode sends float16 unless this says bfloat16)',
        },
      },
    },
    restart: {
      kind: 'section',
      doc: 'recovery of multi-process jobs on one node',
      fields: {
        max: { kind: 'integer', range: NON_NEGATIVE, doc: 'restarts from the last checkpoint after a rank dies or stops answering; 0: fail at once' },
        stallFactor: {
          kind: 'number',
          range: ABOVE_ZERO,
          doc: 'the watchdog: no step finished for stallFactor x the median step time (and at least stallMinMs) while the job runs is a stuck job, rolled back like a silent rank',
        },
        stallMinMs: { kind: 'integer', range: POSITIVE, doc: 'the watchdog never fires sooner than this after the last step (evaluations and checkpoints take their time)' },
      },
    },
    nonFinite: {
      kind: 'enum',
      values: ['error', 'skip'],
      doc: 'a step whose loss or gradient norm is NaN or infinite: "error" stops the run naming the step, "skip" drops its update on every rank; either way the weights are not touched',
    },
    fp16: {
      kind: 'section',
      doc: 'mixed precision as in the seed (fp16 naive): float16 activations and gradients between pipeline stages, dynamic loss scale',
      fields: {
        mode: { kind: 'enum', values: ['naive'], doc: 'the seed\'s AMP_TYPE.NAIVE' },
        initialScale: { kind: 'number', range: { min: 1 }, doc: 'starting loss scale (65536 when fp16 is given)' },
        growthInterval: positiveInt('clean steps before the scale doubles (1000)'),
        hysteresis: positiveInt('overflowing steps before the scale halves (2)'),
      },
    },
  },
};

/** Everything resolveConfig fills in when a key is absent, except the model (MODEL_DEFAULTS) and epochs. */
export const TRAIN_DEFAULTS: Omit<TrainConfig, 'model' | 'data' | 'epochs' | 'steps' | 'backend'> & {
  data: Omit<TrainConfig['data'], 'path'>;
} = {
  parallel: { pipeline: 1, tensor: { mode: '1d', size: 1 }, data: 1, overlapGradReduce: true },
  numMicroBatches: 1,
  numChunks: 1,
  schedule: '1f1b',
  partition: 'uniform',
  batchSize: 8,
  gradientAccumulation: 1,
  seqLen: 128,
  // The seed tutorial: torch.optim.Adam(lr=0.00015, weight_decay=1e-2) with torch's other defaults.
  optimizer: { kind: 'adam', lr: 1.5e-4, schedule: 'constant', warmupSteps: 0, minLr: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 1e-2, gradClip: 0 },
  data: { validFraction: 0, skipBadLines: false, shuffle: true, dropLast: true },
  seed: 42,
  logInterval: 1,
  checkpoint: { every: 0, keep: 3 },
  eval: { every: 0 },
  comm: { dataPlane: 'tcp', wirePrecision: 'float32' },
  restart: { max: 3, stallFactor: 20, stallMinMs: 120_000 },
  nonFinite: 'error',
};

/** When neither epochs nor steps is given. */
export const DEFAULT_EPOCHS = 1;

/** What a value must be, in words, for error messages and help: "a positive integer", "a number in [0, 1)". */
export function describeExpected(spec: FieldSpec): string {
  switch (spec.kind) {
    case 'integer':
      if (spec.range.min === 1 && spec.range.max === undefined) return 'a positive integer';
      if (spec.range.min === 0 && spec.range.max === undefined) return 'a non-negative integer';
      return `an integer ${describeRange(spec.range)}`;
    case 'number':
      return `a number ${describeRange(spec.range)}`;
    case 'boolean':
      return 'true or false';
    case 'string':
      return 'a string';
    case 'enum':
      return `one of ${spec.values.map((v) => JSON.stringify(v)).join(', ')}`;
    case 'section':
      return `an object with keys ${Object.keys(spec.fields).join(', ')}`;
  }
}

function describeRange(range: NumberRange): string {
  const { min, max } = range;
  if (min !== undefined && max !== undefined) {
    return `in ${range.minExclusive ? '(' : '['}${min}, ${max}${range.maxExclusive ? ')' : ']'}`;
  }
  if (min !== undefined) return `${range.minExclusive ? '>' : '>='} ${min}`;
  if (max !== undefined) return `${range.maxExclusive ? '<' : '<='} ${max}`;
  return '(any finite value)';
}

export function inRange(value: number, range: NumberRange): boolean {
  if (range.min !== undefined && (range.minExclusive ? value <= range.min : value < range.min)) return false;
  if (range.max !== undefined && (range.maxExclusive ? value >= range.max : value > range.max)) return false;
  return true;
}

/** Every leaf key as a dotted path with its spec, in table order: the CLI's key list, and suggestions. */
export function listKeys(section: SectionSpec = TRAIN_SCHEMA, prefix = ''): Array<{ path: string; spec: FieldSpec }> {
  const keys: Array<{ path: string; spec: FieldSpec }> = [];
  for (const [name, spec] of Object.entries(section.fields)) {
    const path = prefix === '' ? name : `${prefix}.${name}`;
    if (spec.kind === 'section') keys.push(...listKeys(spec, path));
    else keys.push({ path, spec });
  }
  return keys;
}

/** The default of a leaf key in words, for help: model keys show MODEL_DEFAULTS (a preset may change them). */
export function describeDefault(path: string): string | undefined {
  if (path === 'epochs') return `${DEFAULT_EPOCHS} unless steps is given`;
  if (path === 'optimizer.decaySteps') return "the run's steps";
  if (path === 'eval.batches') return 'every whole global batch of the validation data';
  if (path === 'data.path' || path === 'data.validPath' || path === 'steps' || path === 'model.preset' || path === 'backend') return undefined;
  const [head, ...rest] = path.split('.');
  let value: unknown = head === 'model' ? MODEL_DEFAULTS : (TRAIN_DEFAULTS as unknown as Record<string, unknown>)[head!];
  for (const part of rest) {
    value = (value as Record<string, unknown> | undefined)?.[part];
  }
  return value === undefined ? undefined : JSON.stringify(value);
}

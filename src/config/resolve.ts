/**
 * Implements: resolveConfig, which turns a parsed config (file + overrides) into a complete TrainConfig:
 * defaults filled in, every key and value checked, derived constraints checked, the data file found.
 * Every problem is collected and thrown together in one ConfigError before any work starts.
 */
import { statSync } from 'node:fs';
import { isAbsolute, resolve as resolvePath } from 'node:path';
import { MODEL_DEFAULTS, MODEL_PRESETS, resolveModelConfig, type GPTConfig, type ModelConfigInput } from '../model/config.ts';
import { ConfigError, type ConfigProblem } from './errors.ts';
import {
  DEFAULT_EPOCHS,
  TRAIN_DEFAULTS,
  TRAIN_SCHEMA,
  describeExpected,
  inRange,
  listKeys,
  type FieldSpec,
  type SectionSpec,
} from './schema.ts';
import { closestMatch } from './suggest.ts';
import { lrScheduleProblem } from '../train/lr-schedule.ts';
import type { TrainConfig } from './types.ts';

/** GPT-2's BPE (r50k_base) emits ids up to 50256, so every embedding table needs at least this many rows. */
export const GPT2_TOKENIZER_VOCAB = 50257;

export interface ResolveOptions {
  /** A relative data.path is taken relative to this folder (the config file's); default: the current directory. */
  configDir?: string;
  /** Report a data.path that is not an existing file (default true). */
  checkDataFile?: boolean;
}

type JsonObject = Record<string, unknown>;

function isPlainObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** JSON null means "not given", so `--set epochs=null` restores the default. */
function isAbsent(value: unknown): value is undefined | null {
  return value === undefined || value === null;
}

/** A value as the user would have written it, kept short enough for one line. */
export function formatValue(value: unknown): string {
  if (typeof value === 'number' || typeof value === 'bigint' || value === undefined) return String(value);
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

function typeName(value: unknown): string {
  if (Array.isArray(value)) return 'an array';
  if (value === null) return 'null';
  if (value === undefined) return 'nothing';
  const type = typeof value;
  return type === 'object' ? 'an object' : `a ${type}`;
}

/** Checks one value against its spec; returns what is wrong, or undefined. */
function checkValue(value: unknown, spec: FieldSpec): string | undefined {
  const expected = describeExpected(spec);
  switch (spec.kind) {
    case 'integer':
    case 'number': {
      if (typeof value !== 'number') return `expected ${expected}, got ${formatValue(value)} (${typeName(value)})`;
      const ok = Number.isFinite(value) && (spec.kind === 'number' || Number.isInteger(value)) && inRange(value, spec.range);
      return ok ? undefined : `expected ${expected}, got ${formatValue(value)}`;
    }
    case 'boolean':
      return typeof value === 'boolean' ? undefined : `expected ${expected}, got ${formatValue(value)} (${typeName(value)})`;
    case 'string':
      if (typeof value !== 'string') return `expected ${expected}, got ${formatValue(value)} (${typeName(value)})`;
      return value === '' ? `expected a non-empty string, got ""` : undefined;
    case 'enum': {
      if (typeof value === 'string' && spec.values.includes(value)) return undefined;
      const guess = typeof value === 'string' ? closestMatch(value, spec.values) : undefined;
      return `expected ${expected}, got ${formatValue(value)}${guess === undefined ? '' : `; did you mean ${JSON.stringify(guess)}?`}`;
    }
    case 'section':
      return isPlainObject(value) ? undefined : `expected ${expected}, got ${formatValue(value)} (${typeName(value)})`;
  }
}

/** Every key path in the schema (sections included), for suggestions across sections: `lr` -> `optimizer.lr`. */
const ALL_KEY_PATHS: readonly string[] = (() => {
  const paths = new Set<string>();
  for (const { path } of listKeys()) {
    const parts = path.split('.');
    for (let end = 1; end <= parts.length; end++) paths.add(parts.slice(0, end).join('.'));
  }
  return [...paths];
})();

function unknownKeyMessage(key: string, section: SectionSpec, prefix: string): string {
  const sameSection = closestMatch(key, Object.keys(section.fields));
  if (sameSection !== undefined) return `unknown key; did you mean ${prefix === '' ? sameSection : `${prefix}.${sameSection}`}?`;
  const lastParts = new Map(ALL_KEY_PATHS.map((path) => [path.split('.').pop()!, path]));
  const elsewhere = closestMatch(key, lastParts.keys());
  if (elsewhere !== undefined) {
    const path = lastParts.get(elsewhere)!;
    return `unknown key here; did you mean ${path.includes('.') ? path : `the top-level key ${path}`}?`;
  }
  return `unknown key; ${prefix === '' ? 'the config' : prefix} takes: ${Object.keys(section.fields).join(', ')}`;
}

/**
 * Walks `value` against `section`: unknown keys, then known keys in table order.
 * Adds each wrong value's path to `invalid`, so derived checks can skip it instead of piling on.
 */
function checkSection(value: JsonObject, section: SectionSpec, prefix: string, problems: ConfigProblem[], invalid: Set<string>): void {
  for (const key of Object.keys(value)) {
    if (!Object.hasOwn(section.fields, key)) {
      const path = prefix === '' ? key : `${prefix}.${key}`;
      problems.push({ path, message: unknownKeyMessage(key, section, prefix) });
    }
  }
  for (const [key, spec] of Object.entries(section.fields)) {
    const path = prefix === '' ? key : `${prefix}.${key}`;
    const field = value[key];
    if (isAbsent(field)) continue;
    const problem = checkValue(field, spec);
    if (problem !== undefined) {
      problems.push({ path, message: problem });
      invalid.add(path);
    } else if (spec.kind === 'section') {
      checkSection(field as JsonObject, spec, path, problems, invalid);
    }
  }
}

function lookup(root: JsonObject, path: string): unknown {
  let value: unknown = root;
  for (const part of path.split('.')) {
    if (!isPlainObject(value)) return undefined;
    value = value[part];
  }
  return value;
}

export function resolveConfig(input: unknown, opts: ResolveOptions = {}): TrainConfig {
  if (!isPlainObject(input)) {
    throw new ConfigError([{ path: '', message: `expected a JSON object, got ${formatValue(input)} (${typeName(input)})` }]);
  }
  const problems: ConfigProblem[] = [];
  const invalid = new Set<string>();
  checkSection(input, TRAIN_SCHEMA, '', problems, invalid);

  /** The given value when present and valid, else the default. */
  const given = (path: string): unknown => {
    const value = lookup(input, path);
    return isAbsent(value) || invalid.has(path) ? undefined : value;
  };
  const pick = <T>(path: string): T => (given(path) ?? lookup(TRAIN_DEFAULTS as unknown as JsonObject, path)) as T;

  const model = resolveModel(given);
  const config: TrainConfig = {
    model,
    parallel: {
      pipeline: pick('parallel.pipeline'),
      tensor: { mode: pick('parallel.tensor.mode'), size: pick('parallel.tensor.size') },
      data: pick('parallel.data'),
      overlapGradReduce: pick('parallel.overlapGradReduce'),
    },
    numMicroBatches: pick('numMicroBatches'),
    numChunks: pick('numChunks'),
    // Megatron's habit: model chunks per stage imply the interleaved schedule unless one is named.
    schedule: (given('schedule') as TrainConfig['schedule'] | undefined) ?? ((pick('numChunks') as number) > 1 ? 'interleaved' : '1f1b'),
    partition: pick('partition'),
    batchSize: pick('batchSize'),
    gradientAccumulation: pick('gradientAccumulation'),
    seqLen: pick('seqLen'),
    optimizer: {
      kind: pick('optimizer.kind'),
      lr: pick('optimizer.lr'),
      schedule: pick('optimizer.schedule'),
      warmupSteps: pick('optimizer.warmupSteps'),
      minLr: pick('optimizer.minLr'),
      ...(given('optimizer.decaySteps') === undefined ? {} : { decaySteps: given('optimizer.decaySteps') as number }),
      beta1: pick('optimizer.beta1'),
      beta2: pick('optimizer.beta2'),
      eps: pick('optimizer.eps'),
      weightDecay: pick('optimizer.weightDecay'),
      gradClip: pick('optimizer.gradClip'),
    },
    data: {
      path: resolveDataPath('data.path', given('data.path') as string | undefined, opts, invalid, problems),
      validFraction: pick('data.validFraction'),
      skipBadLines: pick('data.skipBadLines'),
      shuffle: pick('data.shuffle'),
      dropLast: pick('data.dropLast'),
    },
    seed: pick('seed'),
    logInterval: pick('logInterval'),
    checkpoint: { every: pick('checkpoint.every'), keep: pick('checkpoint.keep') },
    comm: { dataPlane: pick('comm.dataPlane'), wirePrecision: pick('comm.wirePrecision') },
    eval: { every: pick('eval.every'), ...(given('eval.batches') === undefined ? {} : { batches: given('eval.batches') as number }) },
    restart: { max: pick('restart.max'), stallFactor: pick('restart.stallFactor'), stallMinMs: pick('restart.stallMinMs') },
    nonFinite: pick('nonFinite'),
  };
  const validPath = given('data.validPath') as string | undefined;
  if (validPath !== undefined) config.data.validPath = resolveDataPath('data.validPath', validPath, opts, invalid, problems);
  const epochs = given('epochs') as number | undefined;
  const steps = given('steps') as number | undefined;
  if (epochs !== undefined && steps !== undefined) {
    problems.push({
      path: 'epochs',
      message: `both epochs (${epochs}) and steps (${steps}) are given; keep one (--set epochs=null unsets epochs)`,
    });
  }
  if (steps !== undefined) config.steps = steps;
  else config.epochs = epochs ?? DEFAULT_EPOCHS;
  const backend = given('backend') as TrainConfig['backend'];
  if (backend !== undefined) config.backend = backend;
  if (given('fp16') !== undefined) {
    config.fp16 = {
      mode: (given('fp16.mode') as 'naive' | undefined) ?? 'naive',
      // Megatron and ColossalAI start at 2^32 with float16 compute; here only the wire is float16, whose
      // largest value is 65504, so a start near 2^16 overflows less while still lifting small gradients.
      initialScale: (given('fp16.initialScale') as number | undefined) ?? 65536,
      growthInterval: (given('fp16.growthInterval') as number | undefined) ?? 1000,
      hysteresis: (given('fp16.hysteresis') as number | undefined) ?? 2,
    };
  }

  checkDerived(config, input, invalid, problems);
  if (problems.length > 0) throw new ConfigError(problems);
  return config;
}

/** Defaults, then the preset, then the explicit model keys that passed their checks. */
function resolveModel(given: (path: string) => unknown): GPTConfig {
  const modelInput: ModelConfigInput = {};
  const preset = given('model.preset') as string | undefined;
  if (preset !== undefined) modelInput.preset = preset;
  for (const key of Object.keys(MODEL_DEFAULTS) as Array<keyof GPTConfig>) {
    const value = given(`model.${key}`);
    if (value !== undefined) (modelInput as Record<string, unknown>)[key] = value;
  }
  return resolveModelConfig(modelInput);
}

function resolveDataPath(key: 'data.path' | 'data.validPath', path: string | undefined, opts: ResolveOptions, invalid: Set<string>, problems: ConfigProblem[]): string {
  if (path === undefined) {
    if (!invalid.has('data.path') && !invalid.has('data')) {
      problems.push({
        path: 'data.path',
        message: 'missing; it names the training JSONL file: add "data": {"path": "train.jsonl"} or --set data.path=train.jsonl',
      });
    }
    return '';
  }
  const absolute = isAbsolute(path) ? path : resolvePath(opts.configDir ?? process.cwd(), path);
  if (opts.checkDataFile !== false) {
    const written = path === absolute ? '' : ` (written ${JSON.stringify(path)}, relative to ${opts.configDir === undefined ? 'the current directory' : 'the config file\'s folder'})`;
    try {
      if (!statSync(absolute).isFile()) {
        problems.push({ path: key, message: `${absolute} is not a file${written}; expected a JSONL file` });
      }
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      const reason = code === 'ENOENT' ? 'no such file' : `cannot read it (${code ?? String(error)})`;
      problems.push({ path: key, message: `${absolute}: ${reason}${written}` });
    }
  }
  return absolute;
}

/**
 * Constraints between keys (Megatron's derived-value checks). A check runs only when every key it reads
 * is valid, so one typo does not produce a cascade; each message prints the values it compared and
 * where a model value came from (explicit, preset or default).
 */
function checkDerived(config: TrainConfig, input: JsonObject, invalid: Set<string>, problems: ConfigProblem[]): void {
  const explicitModel = isPlainObject(input.model) ? input.model : {};
  /** False when the key, a section above it, or (for an unwritten model key) the preset it came from is wrong. */
  const valid = (...paths: string[]) =>
    paths.every((path) => {
      const parts = path.split('.');
      for (let end = 1; end <= parts.length; end++) if (invalid.has(parts.slice(0, end).join('.'))) return false;
      return !(parts[0] === 'model' && invalid.has('model.preset') && isAbsent(explicitModel[parts[1]!]));
    });
  const presetName = typeof explicitModel.preset === 'string' && !invalid.has('model.preset') ? explicitModel.preset : undefined;
  /** `model.hiddenSize = 128 (from preset "tiny")`: says where to change a value the user never wrote. */
  const show = (path: string): string => {
    const [head, key] = path.split('.') as [string, string | undefined];
    const value = head === 'model' ? config.model[key as keyof GPTConfig] : lookup(config as unknown as JsonObject, path);
    let origin = '';
    if (head === 'model' && isAbsent(explicitModel[key!])) {
      const fromPreset = presetName !== undefined && Object.hasOwn(MODEL_PRESETS[presetName]!, key!);
      origin = fromPreset ? ` (from preset "${presetName}")` : ' (default)';
    } else if (head !== 'model' && isAbsent(lookup(input, path))) {
      origin = ' (default)';
    }
    return `${path} = ${formatValue(value)}${origin}`;
  };
  const add = (path: string, message: string) => problems.push({ path, message });

  const { model, parallel } = config;
  const tp = parallel.tensor.size;
  const pp = parallel.pipeline;

  // The run's length is known only with the data; the launcher checks decaySteps' default against it.
  const lrProblem = valid('optimizer') ? lrScheduleProblem(config.optimizer, config.steps) : undefined;
  if (lrProblem !== undefined) add(lrProblem.path, lrProblem.message);

  // Validation: one source of held-out text, and evaluation only where there is some.
  if (valid('data.validPath', 'data.validFraction') && config.data.validPath !== undefined && config.data.validFraction > 0) {
    add('data.validFraction', `${show('data.validFraction')} and data.validPath both name validation data; keep one`);
  }
  const validates = config.data.validPath !== undefined || config.data.validFraction > 0;
  // eval.every 0 is the default a saved config repeats: only a request to evaluate needs the data.
  for (const key of ['eval.every', 'eval.batches']) {
    const value = lookup(input, key);
    if (valid(key, 'data') && !validates && !isAbsent(value) && value !== 0) {
      add(key, `${key} is set but the run has no validation data: set data.validPath (a held-out JSONL file) or data.validFraction (e.g. 0.05)`);
    }
  }

  if (valid('model.hiddenSize', 'model.numAttentionHeads') && model.hiddenSize % model.numAttentionHeads !== 0) {
    add('model.hiddenSize', `${show('model.hiddenSize')} is not divisible by ${show('model.numAttentionHeads')}; each head needs hiddenSize / numAttentionHeads dimensions`);
  }
  if (valid('seqLen', 'model.maxPositionEmbeddings') && config.seqLen > model.maxPositionEmbeddings) {
    add('seqLen', `${show('seqLen')} is longer than ${show('model.maxPositionEmbeddings')}; lower seqLen or raise maxPositionEmbeddings`);
  }
  if (valid('model.vocabSize') && model.vocabSize < GPT2_TOKENIZER_VOCAB) {
    add('model.vocabSize', `${show('model.vocabSize')} is below ${GPT2_TOKENIZER_VOCAB}: the GPT-2 tokenizer emits ids up to ${GPT2_TOKENIZER_VOCAB - 1}, which must fit (50304, a multiple of 64, is the usual choice)`);
  }
  if (valid('model.hiddenSize', 'model.mlpRatio') && !Number.isInteger(model.hiddenSize * model.mlpRatio)) {
    add('model.mlpRatio', `${show('model.hiddenSize')} x ${show('model.mlpRatio')} = ${model.hiddenSize * model.mlpRatio}, but the MLP width must be a whole number`);
  }
  if (valid('batchSize', 'numMicroBatches') && config.batchSize % config.numMicroBatches !== 0) {
    add('batchSize', `${show('batchSize')} is not divisible by ${show('numMicroBatches')}; every micro-batch must hold the same number of samples`);
  }

  // Pipeline: ColossalAI's partition_uniform splits the layers into numChunks equal parts, then each
  // part over the stages; a stage without a layer would only pass activations along.
  if (valid('numChunks', 'schedule') && config.schedule === 'zbv' && config.numChunks !== 2) {
    add('numChunks', `schedule "zbv" needs numChunks 2 (${show('numChunks')}): its V runs one chunk down the stages and one back up`);
  } else if (valid('numChunks', 'schedule') && config.numChunks > 1 && config.schedule !== 'interleaved' && config.schedule !== 'zbv') {
    add('numChunks', `${show('numChunks')} needs schedule "interleaved" or "zbv" (${show('schedule')}); gpipe, 1f1b, zb-h1 and auto-zb run one chunk per stage`);
  }
  if (valid('numChunks', 'parallel.pipeline') && config.numChunks > 1 && pp === 1) {
    add('numChunks', `${show('numChunks')} needs parallel.pipeline > 1 (interleaved 1F1B splits the layers over pipeline stages; ${show('parallel.pipeline')})`);
  }
  if (valid('model.numLayers', 'numChunks', 'partition') && config.partition === 'uniform' && model.numLayers % config.numChunks !== 0) {
    add('model.numLayers', `${show('model.numLayers')} is not divisible by ${show('numChunks')}; each chunk gets an equal share of the layers`);
  } else if (valid('model.numLayers', 'numChunks', 'parallel.pipeline') && model.numLayers < pp * config.numChunks) {
    add('model.numLayers', `${show('model.numLayers')} is fewer than parallel.pipeline x numChunks = ${pp} x ${config.numChunks} = ${pp * config.numChunks}; every stage needs at least one layer per chunk`);
  }
  // pytorch's Schedule1F1B refuses fewer micro-batches than stages: the pipeline would never fill.
  if (valid('numMicroBatches', 'parallel.pipeline') && pp > 1 && config.numMicroBatches < pp) {
    add('numMicroBatches', `${show('numMicroBatches')} is fewer than ${show('parallel.pipeline')} stages; 1F1B needs at least one micro-batch per stage`);
  } else if (valid('numMicroBatches', 'parallel.pipeline', 'numChunks', 'schedule') && config.schedule === 'interleaved' && config.numChunks > 1 && config.numMicroBatches % pp !== 0) {
    // Megatron's interleaved schedule walks micro-batches in groups of pipeline size.
    add('numMicroBatches', `${show('numMicroBatches')} is not a multiple of ${show('parallel.pipeline')}, which the interleaved schedule (numChunks > 1) requires`);
  }

  // Tensor parallelism (Megatron 1D): heads, MLP columns and vocabulary rows are split evenly over tp ranks.
  if (tp > 1 && valid('parallel.tensor.size')) {
    if (valid('model.numAttentionHeads') && model.numAttentionHeads % tp !== 0) {
      add('model.numAttentionHeads', `${show('model.numAttentionHeads')} is not divisible by ${show('parallel.tensor.size')}; each tensor-parallel rank holds whole heads`);
    }
    const mlpWidth = model.hiddenSize * model.mlpRatio;
    if (valid('model.hiddenSize', 'model.mlpRatio') && Number.isInteger(mlpWidth) && mlpWidth % tp !== 0) {
      add('model.mlpRatio', `the MLP width ${mlpWidth} (hiddenSize x mlpRatio) is not divisible by ${show('parallel.tensor.size')}`);
    }
    if (valid('model.vocabSize') && model.vocabSize % tp !== 0) {
      add('model.vocabSize', `${show('model.vocabSize')} is not divisible by ${show('parallel.tensor.size')}; the vocab-parallel embedding splits rows evenly (pad vocabSize up to a multiple of ${tp})`);
    }
  }
}

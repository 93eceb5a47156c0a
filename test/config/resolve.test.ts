// Tests: defaults, validation rules and derived checks of resolveConfig (src/config/resolve.ts).
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '../../src/config/errors.ts';
import { applyOverrides } from '../../src/config/overrides.ts';
import { resolveConfig } from '../../src/config/resolve.ts';
import type { TrainConfig } from '../../src/config/types.ts';
import { MODEL_DEFAULTS } from '../../src/model/config.ts';

const dir = mkdtempSync(join(tmpdir(), 'gpt-hybrid-resolve-'));
after(() => rmSync(dir, { recursive: true, force: true }));
writeFileSync(join(dir, 'train.jsonl'), '{"text": "hello"}\n');
mkdirSync(join(dir, 'folder'));
const DATA = { path: join(dir, 'train.jsonl') };

/** The problems resolveConfig reports for `input` (which must be invalid). */
function problemsOf(input: unknown): ConfigError {
  try {
    resolveConfig(input);
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected ConfigError, got ${String(error)}`);
    return error;
  }
  assert.fail(`expected ${JSON.stringify(input)} to be rejected`);
}

/** Asserts that `input` is rejected with a problem at `path` whose line matches `pattern`. */
function assertProblem(input: Record<string, unknown>, path: string, pattern: RegExp): void {
  const error = problemsOf({ data: DATA, ...input });
  const problem = error.problems.find((p) => p.path === path);
  assert.ok(problem, `no problem at ${path} for ${JSON.stringify(input)}; got:\n${error.message}`);
  assert.match(problem.message, pattern, `problem at ${path}`);
  // The message carries the key path on the problem's own line.
  assert.ok(error.message.split('\n').some((line) => line.startsWith(`  ${path}: `) && pattern.test(line)));
}

test('resolve - a minimal config gets every documented default', () => {
  const config = resolveConfig({ data: DATA });
  const expected: TrainConfig = {
    model: MODEL_DEFAULTS,
    parallel: { pipeline: 1, tensor: { mode: '1d', size: 1 }, data: 1, overlapGradReduce: true },
    numMicroBatches: 1,
    numChunks: 1,
    schedule: '1f1b',
    partition: 'uniform',
    batchSize: 8,
    gradientAccumulation: 1,
    seqLen: 128,
    epochs: 1,
    optimizer: { kind: 'adam', lr: 1.5e-4, schedule: 'constant', warmupSteps: 0, minLr: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 1e-2, gradClip: 0 },
    data: { path: DATA.path, validFraction: 0, skipBadLines: false, shuffle: true, dropLast: true },
    seed: 42,
    logInterval: 1,
    checkpoint: { every: 0, keep: 3 },
    eval: { every: 0 },
    comm: { dataPlane: 'tcp', wirePrecision: 'float32' },
    restart: { max: 3, stallFactor: 20, stallMinMs: 120_000 },
    nonFinite: 'error',
  };
  assert.deepEqual(config, expected);
  assert.equal('steps' in config, false);
  assert.equal('backend' in config, false);
});

test('resolve - a preset plus explicit keys plus overrides', () => {
  const file = {
    model: { preset: 'tiny', numLayers: 6 },
    parallel: { pipeline: 2, tensor: { size: 2 } },
    numMicroBatches: 4,
    data: { ...DATA, shuffle: false },
    steps: 10,
  };
  const config = resolveConfig(applyOverrides(file, ['optimizer.lr=1e-3', 'optimizer.kind=adamw', 'backend=wasm', 'seqLen=256', 'model.dropRate=0.1']));
  assert.deepEqual(config.model, {
    ...MODEL_DEFAULTS,
    numLayers: 6,
    hiddenSize: 64,
    numAttentionHeads: 4,
    maxPositionEmbeddings: 256,
    dropRate: 0.1,
  });
  assert.deepEqual(config.parallel, { pipeline: 2, tensor: { mode: '1d', size: 2 }, data: 1, overlapGradReduce: true });
  assert.equal(config.numMicroBatches, 4);
  assert.equal(config.seqLen, 256);
  assert.equal(config.steps, 10);
  assert.equal(config.epochs, undefined);
  assert.equal(config.backend, 'wasm');
  assert.deepEqual(config.optimizer, { kind: 'adamw', lr: 1e-3, schedule: 'constant', warmupSteps: 0, minLr: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 1e-2, gradClip: 0 });
  assert.deepEqual(config.data, { path: DATA.path, validFraction: 0, skipBadLines: false, shuffle: false, dropLast: true });
});

test('resolve - every preset resolves with its own shape', () => {
  const expectations: Record<string, [number, number, number]> = {
    tiny: [4, 64, 4],
    'gpt2-small': [12, 768, 12],
    'gpt2-exlarge': [48, 1600, 32],
    gpt3: [96, 12288, 96],
  };
  for (const [preset, [layers, hidden, heads]] of Object.entries(expectations)) {
    const { model } = resolveConfig({ model: { preset }, data: DATA });
    assert.deepEqual([model.numLayers, model.hiddenSize, model.numAttentionHeads], [layers, hidden, heads], preset);
  }
});

test('resolve - null means "not given": the default applies', () => {
  const config = resolveConfig({ data: DATA, epochs: null, steps: 3, optimizer: null, backend: null });
  assert.equal(config.steps, 3);
  assert.equal(config.epochs, undefined);
  assert.equal(config.optimizer.lr, 1.5e-4);
  assert.equal(config.backend, undefined);
});

test('resolve - a relative data.path resolves against configDir, else the current directory', () => {
  const config = resolveConfig({ data: { path: 'train.jsonl' } }, { configDir: dir });
  assert.equal(config.data.path, join(dir, 'train.jsonl'));
  const unchecked = resolveConfig({ data: { path: 'some/where.jsonl' } }, { checkDataFile: false });
  assert.equal(unchecked.data.path, join(process.cwd(), 'some/where.jsonl'));
});

test('resolve - the data file must exist and be a file', () => {
  assertProblem({ data: { path: join(dir, 'absent.jsonl') } }, 'data.path', /absent\.jsonl: no such file/);
  assertProblem({ data: { path: join(dir, 'folder') } }, 'data.path', /is not a file/);
  const relative = problemsOf({ data: { path: 'absent.jsonl' } });
  assert.match(relative.message, /written "absent\.jsonl", relative to the current directory/);
  assert.doesNotThrow(() => resolveConfig({ data: { path: join(dir, 'absent.jsonl') } }, { checkDataFile: false }));
});

test('resolve - data.path is required', () => {
  const error = problemsOf({});
  assert.equal(error.problems.length, 1);
  assert.equal(error.problems[0]!.path, 'data.path');
  assert.match(error.message, /data\.path: missing; .*--set data\.path=/);
});

// [what, input, path of the problem, what its line must say (the bad value and the expectation)]
const RULES: Array<[string, Record<string, unknown>, string, RegExp]> = [
  ['unknown top-level key, near miss', { batchSzie: 8 }, 'batchSzie', /unknown key; did you mean batchSize\?/],
  ['unknown key in model', { model: { numLayer: 4 } }, 'model.numLayer', /did you mean model\.numLayers\?/],
  ['unknown key in optimizer', { optimizer: { learningRate: 1 } }, 'optimizer.learningRate', /optimizer takes: kind, lr, schedule, warmupSteps, minLr, decaySteps, beta1/],
  ['unknown key in data', { data: { ...DATA, shufle: true } }, 'data.shufle', /did you mean data\.shuffle\?/],
  ['unknown key in parallel', { parallel: { pipline: 2 } }, 'parallel.pipline', /did you mean parallel\.pipeline\?/],
  ['unknown key in parallel.tensor', { parallel: { tensor: { sise: 2 } } }, 'parallel.tensor.sise', /did you mean parallel\.tensor\.size\?/],
  ['key of another section', { lr: 0.1 }, 'lr', /did you mean optimizer\.lr\?/],
  ['top-level key inside model', { model: { seqLen: 64 } }, 'model.seqLen', /did you mean the top-level key seqLen\?/],
  ['seed-style snake case', { NUM_MICRO_BATCHES: 2 }, 'NUM_MICRO_BATCHES', /did you mean numMicroBatches\?/],
  ['unknown preset names the choices', { model: { preset: 'gpt4' } }, 'model.preset', /"tiny", "gpt2-small", "gpt2-exlarge", "gpt3", got "gpt4"/],
  ['preset near miss', { model: { preset: 'gpt2small' } }, 'model.preset', /did you mean "gpt2-small"\?/],
  ['count zero', { model: { numLayers: 0 } }, 'model.numLayers', /expected a positive integer, got 0/],
  ['count fractional', { batchSize: 2.5 }, 'batchSize', /expected a positive integer, got 2\.5/],
  ['count as a string', { seqLen: '128' }, 'seqLen', /expected a positive integer, got "128" \(a string\)/],
  ['negative micro-batches', { numMicroBatches: -1 }, 'numMicroBatches', /positive integer, got -1/],
  ['zero chunks', { numChunks: 0 }, 'numChunks', /positive integer, got 0/],
  ['zero accumulation', { gradientAccumulation: 0 }, 'gradientAccumulation', /positive integer, got 0/],
  ['zero log interval', { logInterval: 0 }, 'logInterval', /positive integer, got 0/],
  ['zero epochs', { epochs: 0 }, 'epochs', /positive integer, got 0/],
  ['negative steps', { steps: -3 }, 'steps', /positive integer, got -3/],
  ['pipeline size', { parallel: { pipeline: 0 } }, 'parallel.pipeline', /positive integer, got 0/],
  ['data-parallel size', { parallel: { data: 1.5 } }, 'parallel.data', /positive integer, got 1\.5/],
  ['tensor size', { parallel: { tensor: { size: -2 } } }, 'parallel.tensor.size', /positive integer, got -2/],
  ['tensor mode', { parallel: { tensor: { mode: '2d' } } }, 'parallel.tensor.mode', /expected one of "1d", got "2d"/],
  ['backend', { backend: 'webgl' }, 'backend', /expected one of "tensorflow", "webgpu", "wasm", "cpu", got "webgl"/],
  ['optimizer kind', { optimizer: { kind: 'sgd' } }, 'optimizer.kind', /one of "adam", "adamw", got "sgd"/],
  ['lr zero', { optimizer: { lr: 0 } }, 'optimizer.lr', /expected a number > 0, got 0/],
  ['lr not finite', { optimizer: { lr: Infinity } }, 'optimizer.lr', /expected a number > 0, got Infinity/],
  ['lr NaN', { optimizer: { lr: NaN } }, 'optimizer.lr', /got NaN/],
  ['beta1 one', { optimizer: { beta1: 1 } }, 'optimizer.beta1', /expected a number in \[0, 1\), got 1/],
  ['beta2 negative', { optimizer: { beta2: -0.1 } }, 'optimizer.beta2', /in \[0, 1\), got -0\.1/],
  ['eps zero', { optimizer: { eps: 0 } }, 'optimizer.eps', /> 0, got 0/],
  ['weight decay negative', { optimizer: { weightDecay: -1 } }, 'optimizer.weightDecay', />= 0, got -1/],
  ['grad clip negative', { optimizer: { gradClip: -1 } }, 'optimizer.gradClip', />= 0, got -1/],
  ['drop rate one', { model: { dropRate: 1 } }, 'model.dropRate', /in \[0, 1\), got 1/],
  ['attention drop rate', { model: { attnDropRate: 1.5 } }, 'model.attnDropRate', /in \[0, 1\), got 1\.5/],
  ['embedding drop rate', { model: { embedDropRate: -0.1 } }, 'model.embedDropRate', /in \[0, 1\), got -0\.1/],
  ['layer norm epsilon', { model: { layerNormEpsilon: 0 } }, 'model.layerNormEpsilon', /> 0, got 0/],
  ['boolean', { data: { ...DATA, shuffle: 'yes' } }, 'data.shuffle', /expected true or false, got "yes" \(a string\)/],
  ['checkpoint boolean', { model: { checkpoint: 1 } }, 'model.checkpoint', /true or false, got 1/],
  ['data path type', { data: { path: 5 } }, 'data.path', /expected a string, got 5 \(a number\)/],
  ['data path empty', { data: { path: '' } }, 'data.path', /non-empty string/],
  ['section type', { optimizer: 5 }, 'optimizer', /expected an object with keys kind, lr, .*got 5/],
  ['section as array', { model: [] }, 'model', /got \[\] \(an array\)/],
  ['seed range', { seed: -1 }, 'seed', /an integer in \[0, 4294967295\], got -1/],
  ['seed too large', { seed: 2 ** 32 }, 'seed', /got 4294967296/],
  ['hidden size not divisible by heads', { model: { hiddenSize: 100, numAttentionHeads: 12 } }, 'model.hiddenSize', /model\.hiddenSize = 100 is not divisible by model\.numAttentionHeads = 12/],
  ['sequence longer than positions', { seqLen: 2048 }, 'seqLen', /seqLen = 2048 is longer than model\.maxPositionEmbeddings = 1024/],
  ['vocabulary too small for the tokenizer', { model: { vocabSize: 1000 } }, 'model.vocabSize', /1000 is below 50257: the GPT-2 tokenizer/],
  ['batch not divisible by micro-batches', { batchSize: 10, numMicroBatches: 4 }, 'batchSize', /batchSize = 10 is not divisible by numMicroBatches = 4/],
  ['epochs and steps both', { epochs: 2, steps: 10 }, 'epochs', /both epochs \(2\) and steps \(10\)/],
  ['chunks without pipeline', { numChunks: 2 }, 'numChunks', /numChunks = 2 needs parallel\.pipeline > 1/],
  ['layers not divisible by chunks', { model: { numLayers: 9 }, numChunks: 2, parallel: { pipeline: 2 }, numMicroBatches: 2 }, 'model.numLayers', /model\.numLayers = 9 is not divisible by numChunks = 2/],
  ['fewer layers than stages', { model: { numLayers: 2 }, parallel: { pipeline: 4 }, numMicroBatches: 4 }, 'model.numLayers', /fewer than parallel\.pipeline x numChunks = 4 x 1 = 4/],
  ['fewer micro-batches than stages', { parallel: { pipeline: 4 }, numMicroBatches: 2 }, 'numMicroBatches', /numMicroBatches = 2 is fewer than parallel\.pipeline = 4/],
  ['interleaved needs micro-batches in pipeline groups', { parallel: { pipeline: 2 }, numChunks: 2, numMicroBatches: 3, batchSize: 6 }, 'numMicroBatches', /numMicroBatches = 3 is not a multiple of parallel\.pipeline = 2/],
  ['chunks with a one-chunk schedule', { parallel: { pipeline: 2 }, numChunks: 2, numMicroBatches: 2, schedule: '1f1b' }, 'numChunks', /numChunks = 2 needs schedule "interleaved"/],
  ['zb-h1 with chunks', { parallel: { pipeline: 2 }, numChunks: 2, numMicroBatches: 2, schedule: 'zb-h1' }, 'numChunks', /numChunks = 2 needs schedule "interleaved" or "zbv"/],
  ['zbv without its two chunks', { parallel: { pipeline: 2 }, numMicroBatches: 2, schedule: 'zbv' }, 'numChunks', /schedule "zbv" needs numChunks 2 \(numChunks = 1 \(default\)\)/],
  ['zbv with three chunks', { model: { numLayers: 12 }, parallel: { pipeline: 2 }, numChunks: 3, numMicroBatches: 2, schedule: 'zbv' }, 'numChunks', /schedule "zbv" needs numChunks 2 \(numChunks = 3\)/],
  ['heads not divisible by tensor size', { model: { numAttentionHeads: 12 }, parallel: { tensor: { size: 8 } } }, 'model.numAttentionHeads', /= 12 .*not divisible by parallel\.tensor\.size = 8/],
  ['vocabulary not divisible by tensor size', { model: { vocabSize: 50257, numAttentionHeads: 12 }, parallel: { tensor: { size: 2 } } }, 'model.vocabSize', /50257 .*not divisible by parallel\.tensor\.size = 2/],
  ['fractional MLP width', { model: { hiddenSize: 768, mlpRatio: 1.0001 } }, 'model.mlpRatio', /must be a whole number/],
];

for (const [what, input, path, pattern] of RULES) {
  test(`resolve - rejects: ${what}`, () => assertProblem(input, path, pattern));
}

test('resolve - derived messages say where an unwritten value came from', () => {
  assertProblem({ model: { preset: 'tiny' }, seqLen: 512 }, 'seqLen', /model\.maxPositionEmbeddings = 256 \(from preset "tiny"\)/);
  assertProblem({ numMicroBatches: 3 }, 'batchSize', /batchSize = 8 \(default\)/);
});

test('resolve - several problems are reported together, one per line', () => {
  const error = problemsOf({
    model: { numLayers: 0, hiddenSize: 100, numAttentionHeads: 12 },
    optimizer: { lr: -1, bogus: 1 },
    batchSize: 10,
    numMicroBatches: 3,
    data: { path: join(dir, 'absent.jsonl') },
    backend: 'gpu',
  });
  const paths = error.problems.map((p) => p.path).sort();
  assert.deepEqual(paths, ['backend', 'batchSize', 'data.path', 'model.hiddenSize', 'model.numLayers', 'optimizer.bogus', 'optimizer.lr']);
  const lines = error.message.split('\n');
  assert.match(lines[0]!, /invalid configuration \(7 problems; fix them and run again\):/);
  assert.equal(lines.length, 1 + 7);
  for (const path of paths) assert.ok(lines.some((line) => line.startsWith(`  ${path}: `)), path);
});

test('resolve - a bad value does not also trigger the derived checks that read it', () => {
  const error = problemsOf({ data: DATA, model: { hiddenSize: 'wide', numAttentionHeads: 12 }, numMicroBatches: 'x', batchSize: 10 });
  assert.deepEqual(error.problems.map((p) => p.path).sort(), ['model.hiddenSize', 'numMicroBatches']);
  const presetError = problemsOf({ data: DATA, model: { preset: 'nope' }, seqLen: 4096 });
  assert.deepEqual(presetError.problems.map((p) => p.path), ['model.preset']);
});

test('resolve - the whole config must be an object', () => {
  for (const input of [null, [], 'config', 3]) {
    const error = problemsOf(input);
    assert.match(error.message, /expected a JSON object/);
  }
});

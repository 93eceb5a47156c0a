/**
 * The Hugging Face GPT-2 interchange (`checkpoint import` / `checkpoint export --format hf-gpt2`). The
 * test writes and reads the format itself (a safetensors header and raw little-endian float32, GPT-2's
 * names, Conv1D [in, out] weights, c_attn's columns as [q | k | v] over all heads), so the mapping is
 * checked element by element against that independent reading, not against our own code: an import of
 * a hub-style folder (no `transformer.` prefix, the causal-mask buffers present), an export (names,
 * shapes, dtypes, config.json), the round trip (every value, hence the logits, exactly), fine-tuning
 * the imported checkpoint in a pp2 layout, and what is refused.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadCheckpoint, readRegion, resolveCheckpoint } from '../../src/checkpoint/index.ts';
import { runCli, writeTestConfig } from '../support/cli.ts';

const LAYERS = 2;
const HIDDEN = 16;
const HEADS = 2;
const HEAD_DIM = HIDDEN / HEADS;
const VOCAB = 50257;
const POSITIONS = 32;
const offline = { NATS_URL: 'nats://127.0.0.1:1' };

interface Stored {
  dtype: string;
  shape: number[];
  values: Float32Array;
}

/** GPT-2's tensors as the hub names them (no `transformer.`), random values from a simple generator. */
function gpt2Tensors(): Map<string, Stored> {
  let state = 12345;
  const random = (n: number) => Float32Array.from({ length: n }, () => ((state = (state * 1103515245 + 12345) % 2 ** 31) / 2 ** 31 - 0.5) * 0.2);
  const tensors = new Map<string, Stored>();
  const put = (name: string, shape: number[]) => tensors.set(name, { dtype: 'F32', shape, values: random(shape.reduce((a, b) => a * b, 1)) });
  put('wte.weight', [VOCAB, HIDDEN]);
  put('wpe.weight', [POSITIONS, HIDDEN]);
  for (let l = 0; l < LAYERS; l++) {
    put(`h.${l}.ln_1.weight`, [HIDDEN]);
    put(`h.${l}.ln_1.bias`, [HIDDEN]);
    put(`h.${l}.attn.c_attn.weight`, [HIDDEN, 3 * HIDDEN]);
    put(`h.${l}.attn.c_attn.bias`, [3 * HIDDEN]);
    put(`h.${l}.attn.c_proj.weight`, [HIDDEN, HIDDEN]);
    put(`h.${l}.attn.c_proj.bias`, [HIDDEN]);
    put(`h.${l}.ln_2.weight`, [HIDDEN]);
    put(`h.${l}.ln_2.bias`, [HIDDEN]);
    put(`h.${l}.mlp.c_fc.weight`, [HIDDEN, 4 * HIDDEN]);
    put(`h.${l}.mlp.c_fc.bias`, [4 * HIDDEN]);
    put(`h.${l}.mlp.c_proj.weight`, [4 * HIDDEN, HIDDEN]);
    put(`h.${l}.mlp.c_proj.bias`, [HIDDEN]);
    // The causal-mask buffer older GPT-2 files carry.
    put(`h.${l}.attn.bias`, [1, 1, POSITIONS, POSITIONS]);
  }
  put('ln_f.weight', [HIDDEN]);
  put('ln_f.bias', [HIDDEN]);
  return tensors;
}

/** The safetensors format written by hand: an 8-byte little-endian header length, the JSON header, the data. */
function writeSafetensors(path: string, tensors: Map<string, Stored>): void {
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  let offset = 0;
  for (const [name, t] of tensors) {
    header[name] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + 4 * t.values.length] };
    offset += 4 * t.values.length;
  }
  const json = Buffer.from(JSON.stringify(header));
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(path, Buffer.concat([length, json, ...[...tensors.values()].map((t) => Buffer.from(t.values.buffer, t.values.byteOffset, t.values.byteLength))]));
}

/** ... and read by hand. */
function readSafetensors(path: string): Map<string, Stored> {
  const bytes = readFileSync(path);
  const length = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + length).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const out = new Map<string, Stored>();
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const [begin, end] = entry.data_offsets;
    const data = bytes.subarray(8 + length + begin, 8 + length + end);
    out.set(name, { dtype: entry.dtype, shape: entry.shape, values: new Float32Array(new Uint8Array(data).buffer) });
  }
  return out;
}

function hubFolder(root: string, configOverrides: Record<string, unknown> = {}, tensors = gpt2Tensors()): string {
  const folder = join(root, `hub-${Math.random().toString(36).slice(2)}`);
  mkdirSync(folder);
  writeFileSync(join(folder, 'config.json'), JSON.stringify({ model_type: 'gpt2', activation_function: 'gelu_new', n_embd: HIDDEN, n_head: HEADS, n_layer: LAYERS, n_positions: POSITIONS, n_ctx: POSITIONS, vocab_size: VOCAB, layer_norm_epsilon: 1e-5, n_inner: null, ...configOverrides }));
  writeSafetensors(join(folder, 'model.safetensors'), tensors);
  return folder;
}

async function checkpointValues(run: string): Promise<Map<string, Float32Array>> {
  const checkpoint = await loadCheckpoint(await resolveCheckpoint(run), { verify: true });
  try {
    const values = new Map<string, Float32Array>();
    for (const record of checkpoint.manifest.ranks) {
      for (const tensor of record.tensors) {
        if (!/^[mv]\./.test(tensor.name)) values.set(tensor.name, await readRegion(checkpoint, { name: tensor.name, fullShape: tensor.fullShape }));
      }
    }
    return values;
  } finally {
    checkpoint.close();
  }
}

test('import - a hub-style GPT-2 folder becomes a step-0 checkpoint whose every value is GPT-2\'s, c_attn\'s columns regrouped per head', async () => {
  const root = mkdtempSync(join(tmpdir(), 'gpt-hybrid-hf-'));
  const hub = gpt2Tensors();
  const imported = await runCli(['checkpoint', 'import', hubFolder(root, {}, hub), '--out', join(root, 'run')], offline);
  assert.equal(imported.code, 0, imported.output);
  assert.match(imported.output, /2 layers, hidden 16, 2 heads, vocab 50257, context 32 \(skipped 2 buffers/);
  const ours = await checkpointValues(join(root, 'run'));
  assert.deepEqual(ours.get('embedding.wordEmbeddings'), hub.get('wte.weight')!.values);
  assert.deepEqual(ours.get('embedding.positionEmbeddings'), hub.get('wpe.weight')!.values);
  assert.deepEqual(ours.get('norm.gamma'), hub.get('ln_f.weight')!.values);
  for (let l = 0; l < LAYERS; l++) {
    assert.deepEqual(ours.get(`blocks.${l}.mlp.fc1.weight`), hub.get(`h.${l}.mlp.c_fc.weight`)!.values);
    assert.deepEqual(ours.get(`blocks.${l}.attn.proj.weight`), hub.get(`h.${l}.attn.c_proj.weight`)!.values);
    const weight = ours.get(`blocks.${l}.attn.qkv.weight`)!;
    const theirs = hub.get(`h.${l}.attn.c_attn.weight`)!.values;
    const bias = ours.get(`blocks.${l}.attn.qkv.bias`)!;
    const theirBias = hub.get(`h.${l}.attn.c_attn.bias`)!.values;
    for (let head = 0; head < HEADS; head++) {
      for (let part = 0; part < 3; part++) {
        for (let j = 0; j < HEAD_DIM; j++) {
          const ourColumn = head * 3 * HEAD_DIM + part * HEAD_DIM + j;
          const gpt2Column = part * HIDDEN + head * HEAD_DIM + j;
          assert.equal(bias[ourColumn], theirBias[gpt2Column]);
          for (let row = 0; row < HIDDEN; row++) assert.equal(weight[row * 3 * HIDDEN + ourColumn], theirs[row * 3 * HIDDEN + gpt2Column]);
        }
      }
    }
  }

  // Export: GPT-2's names with `transformer.`, float32, the shapes and every value of the hub's tensors; no buffers, no head.
  const exported = await runCli(['checkpoint', 'export', join(root, 'run'), '--format', 'hf-gpt2', '--out', join(root, 'hf')], offline);
  assert.equal(exported.code, 0, exported.output);
  const written = readSafetensors(join(root, 'hf', 'model.safetensors'));
  const parameters = [...hub].filter(([name]) => !/\.attn\.bias$/.test(name));
  assert.equal(written.size, parameters.length);
  for (const [name, tensor] of parameters) {
    const back = written.get(`transformer.${name}`);
    assert.ok(back !== undefined, `transformer.${name} missing`);
    assert.equal(back.dtype, 'F32');
    assert.deepEqual(back.shape, tensor.shape);
    assert.deepEqual(back.values, tensor.values, name);
  }
  const config = JSON.parse(readFileSync(join(root, 'hf', 'config.json'), 'utf8')) as Record<string, unknown>;
  assert.deepEqual([config.model_type, config.n_layer, config.n_embd, config.n_head, config.vocab_size, config.n_positions, config.activation_function, config.tie_word_embeddings], ['gpt2', 2, 16, 2, VOCAB, POSITIONS, 'gelu_new', true]);
});

test('round trip - a trained checkpoint exported and imported again holds the same values bit for bit, and fine-tunes in pp2', async () => {
  const root = mkdtempSync(join(tmpdir(), 'gpt-hybrid-hf-'));
  const model = { numLayers: LAYERS, hiddenSize: HIDDEN, numAttentionHeads: HEADS, vocabSize: VOCAB, maxPositionEmbeddings: POSITIONS };
  const config = writeTestConfig({ model, seqLen: 16, steps: 3, checkpoint: { every: 3 } });
  const trained = await runCli(['train', config, '--out', join(root, 'trained'), '--quiet'], offline);
  assert.equal(trained.code, 0, trained.output);
  assert.equal((await runCli(['checkpoint', 'export', join(root, 'trained'), '--format', 'hf-gpt2', '--out', join(root, 'hf')], offline)).code, 0);
  assert.equal((await runCli(['checkpoint', 'import', join(root, 'hf'), '--out', join(root, 'back')], offline)).code, 0);
  const before = await checkpointValues(join(root, 'trained'));
  const after = await checkpointValues(join(root, 'back'));
  assert.deepEqual([...after.keys()].sort(), [...before.keys()].sort());
  for (const [name, values] of before) assert.deepEqual(after.get(name), values, name);
  // Equal weights give equal logits: greedy text from both is the same.
  const greedy = async (run: string) => (await runCli(['generate', run, '--prompt', 'The jury', '--temperature', '0', '-n', '8'], offline)).output.split('\n').find((line) => line.startsWith('The jury'));
  assert.equal(await greedy(join(root, 'back')), await greedy(join(root, 'trained')));
  const tuned = await runCli(['train', config, '--out', join(root, 'tuned'), '--resume', join(root, 'back'), '--simulate', '--set', 'parallel.pipeline=2', '--set', 'numMicroBatches=2', '--quiet'], offline);
  assert.equal(tuned.code, 0, tuned.output);
  assert.equal(readFileSync(join(root, 'tuned', 'metrics.jsonl'), 'utf8').trim().split('\n').length, 3);
});

test('import - refused with the reason: another activation, a missing tensor, an untied head, a non-empty --out', async () => {
  const root = mkdtempSync(join(tmpdir(), 'gpt-hybrid-hf-'));
  const refused = async (folder: string, pattern: RegExp, out = join(root, `out-${Math.random()}`)) => {
    const run = await runCli(['checkpoint', 'import', folder, '--out', out], offline);
    assert.equal(run.code, 1, run.output);
    assert.match(run.output, pattern);
  };
  await refused(hubFolder(root, { activation_function: 'relu' }), /activation_function "relu"; this model computes GELU, exact \("gelu"\) or GPT-2's tanh approximation/);
  const missing = gpt2Tensors();
  missing.delete('h.1.mlp.c_fc.bias');
  await refused(hubFolder(root, {}, missing), /no tensor transformer\.h\.1\.mlp\.c_fc\.bias/);
  const untied = gpt2Tensors();
  untied.set('lm_head.weight', { dtype: 'F32', shape: [VOCAB, HIDDEN], values: new Float32Array(VOCAB * HIDDEN) });
  await refused(hubFolder(root, {}, untied), /lm_head\.weight differs from the word embedding/);
  const occupied = join(root, 'occupied');
  mkdirSync(occupied);
  writeFileSync(join(occupied, 'keep.txt'), 'mine');
  await refused(hubFolder(root), /exists and is not empty \(keep\.txt\); import never overwrites/, occupied);
  assert.equal(readFileSync(join(occupied, 'keep.txt'), 'utf8'), 'mine');
});

test('exact GELU - a folder with activation_function "gelu" imports as model.activation gelu, and exports as "gelu" with a note', async () => {
  const root = mkdtempSync(join(tmpdir(), 'gpt-hybrid-hf-'));
  assert.equal((await runCli(['checkpoint', 'import', hubFolder(root, { activation_function: 'gelu' }), '--out', join(root, 'run')], offline)).code, 0);
  const checkpoint = await loadCheckpoint(await resolveCheckpoint(join(root, 'run')), { verify: true });
  const model = (checkpoint.manifest.config as { model: { activation: string } }).model;
  checkpoint.close();
  assert.equal(model.activation, 'gelu');
  const exported = await runCli(['checkpoint', 'export', join(root, 'run'), '--format', 'hf-gpt2', '--out', join(root, 'hf')], offline);
  assert.equal(exported.code, 0, exported.output);
  assert.match(exported.output, /uses the exact GELU \(activation_function "gelu"\); read with GPT-2's gelu_new its outputs differ slightly/);
  assert.equal((JSON.parse(readFileSync(join(root, 'hf', 'config.json'), 'utf8')) as { activation_function: string }).activation_function, 'gelu');
});

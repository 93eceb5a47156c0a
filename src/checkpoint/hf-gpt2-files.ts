/**
 * Implements: `checkpoint export --format hf-gpt2` and `checkpoint import`: a checkpoint of any layout
 * to a Hugging Face GPT-2 folder (`model.safetensors`, float32 weights only, and `config.json`), and
 * such a folder (one we wrote, or the real GPT-2 from the hub) to a run folder whose step-0 checkpoint
 * `train --resume` fine-tunes in any layout. The names and layouts are hf-gpt2.ts's; the checkpoint's
 * parameters are read whole by global name (as a resume in another layout reads them), and the new
 * checkpoint is committed like a training run's. Neither overwrites: the output folder must be new or empty.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { resolveConfig } from '../config/resolve.ts';
import type { TrainConfig } from '../config/types.ts';
import { decodeFloat16 } from '../comm/float16.ts';
import type { GPTConfig } from '../model/config.ts';
import { WORD_EMBEDDING } from '../model/params.ts';
import { wholeModelParams } from '../model/sharding.ts';
import { RUN_CHECKPOINTS_DIR, beginCheckpoint, commitCheckpoint, loadCheckpoint, resolveCheckpoint, writeRankShard } from './checkpoint.ts';
import { CheckpointError } from './errors.ts';
import { hfConfigOf, hfLayoutValues, hfNameCandidates, hfNameOf, isHfBuffer, modelKeysOfHf } from './hf-gpt2.ts';
import { manifestParts } from './manifest-parts.ts';
import { refuseNonEmptyFolder } from './new-folder.ts';
import { rankTensorsToSave, readParams } from './rank-state.ts';
import { parseSafetensors, serializeSafetensors, type SafetensorsFile, type TensorToWrite } from './safetensors.ts';

export const HF_WEIGHTS_FILE = 'model.safetensors';
export const HF_CONFIG_FILE = 'config.json';

export async function exportHfGpt2(source: string, out: string): Promise<{ sourceDir: string; step: number; model: GPTConfig; tensors: number }> {
  await refuseNonEmptyFolder(out, 'export');
  const sourceDir = await resolveCheckpoint(source);
  const checkpoint = await loadCheckpoint(sourceDir, { verify: true });
  try {
    const config = resolveConfig(checkpoint.manifest.config, { checkDataFile: false });
    const held = wholeModelParams(config.model);
    const params = await readParams(checkpoint, held);
    const tensors = new Map<string, TensorToWrite>();
    for (const { spec } of held) tensors.set(hfNameOf(spec.name), { dtype: 'F32', shape: spec.shape, data: hfLayoutValues(spec.name, params.get(spec.name)!, config.model, true) });
    await mkdir(out, { recursive: true });
    await writeFile(join(out, HF_CONFIG_FILE), JSON.stringify(hfConfigOf(config.model), null, 2) + '\n');
    // `format: pt` is what transformers' safetensors loader asks of a PyTorch checkpoint.
    await writeFile(join(out, HF_WEIGHTS_FILE), serializeSafetensors(tensors, { format: 'pt' }, join(out, HF_WEIGHTS_FILE)));
    return { sourceDir, step: checkpoint.manifest.dataLoader.nextStep, model: config.model, tensors: tensors.size };
  } finally {
    checkpoint.close();
  }
}

export async function importHfGpt2(folder: string, out: string): Promise<{ dir: string; model: GPTConfig; skipped: string[] }> {
  // Refused before anything is read: the weights may be gigabytes.
  await refuseNonEmptyFolder(out, 'import');
  const configPath = join(folder, HF_CONFIG_FILE);
  const weightsPath = join(folder, HF_WEIGHTS_FILE);
  const hfConfig = JSON.parse(await readRequired(configPath, 'utf8')) as unknown;
  const keys = modelKeysOfHf(hfConfig, configPath);
  // The run's config: the model from config.json; the data and the rest are the resuming run's to set.
  const config: TrainConfig = resolveConfig({ model: keys, seqLen: keys.maxPositionEmbeddings, steps: 1, data: { path: 'set-data.path-when-you-train.jsonl' } }, { checkDataFile: false });
  const file = parseSafetensors(new Uint8Array(await readRequired(weightsPath)), weightsPath);
  const held = wholeModelParams(config.model);
  const params = new Map<string, Float32Array>();
  const used = new Set<string>();
  for (const { spec } of held) {
    const name = hfNameCandidates(spec.name).find((candidate) => file.tensors.has(candidate));
    if (name === undefined) throw new CheckpointError('layout', weightsPath, `no tensor ${hfNameOf(spec.name)} (for ${spec.name}); is this a GPT-2 model of the config.json beside it?`);
    const entry = file.entry(name);
    if (entry.shape.length !== spec.shape.length || entry.shape.some((dim, i) => dim !== spec.shape[i])) {
      throw new CheckpointError('layout', weightsPath, `${name} has shape [${entry.shape}]; config.json's model needs [${spec.shape}]`);
    }
    params.set(spec.name, hfLayoutValues(spec.name, float32Of(file, name, weightsPath), config.model, false));
    used.add(name);
  }
  const skipped: string[] = [];
  for (const name of file.tensors.keys()) {
    if (used.has(name)) continue;
    if (isHfBuffer(name)) {
      skipped.push(name);
      continue;
    }
    if (name === 'lm_head.weight') {
      // Tied in GPT-2: a stored head must be the word embedding itself, or the model is not this one.
      const head = float32Of(file, name, weightsPath);
      const words = params.get(WORD_EMBEDDING)!;
      if (head.length !== words.length || head.some((value, i) => value !== words[i])) {
        throw new CheckpointError('layout', weightsPath, 'lm_head.weight differs from the word embedding; this model ties them (GPT-2\'s tie_word_embeddings)');
      }
      skipped.push(name);
      continue;
    }
    throw new CheckpointError('layout', weightsPath, `unexpected tensor ${name}: not a GPT-2 parameter this model has`);
  }
  const root = join(out, RUN_CHECKPOINTS_DIR);
  const temporary = await beginCheckpoint(root, 0);
  const tensors = rankTensorsToSave(held, { params, moments: new Map(), optimizerStep: 0 });
  const record = await writeRankShard(temporary, 0, tensors, { step: 0, optimizerStep: 0 });
  const { dir } = await commitCheckpoint(root, 0, temporary, manifestParts(config, 1, 0, 1, [record]), { keep: 1 });
  return { dir, model: config.model, skipped };
}

/** A tensor of the file as float32: F32 as stored; F16 and BF16 (how the hub also ships weights) widened exactly. */
function float32Of(file: SafetensorsFile, name: string, path: string): Float32Array {
  const entry = file.entry(name);
  if (entry.dtype === 'F32') return file.float32(name).slice();
  const bytes = file.bytes(name);
  const bits = new Uint16Array(bytes.slice().buffer);
  if (entry.dtype === 'F16') return decodeFloat16(bits);
  if (entry.dtype === 'BF16') {
    const wide = new Uint32Array(bits.length);
    for (let i = 0; i < bits.length; i++) wide[i] = bits[i]! << 16;
    return new Float32Array(wide.buffer);
  }
  throw new CheckpointError('layout', path, `${name} is ${entry.dtype}; import reads F32, F16 and BF16 weights`);
}

async function readRequired(path: string): Promise<Buffer>;
async function readRequired(path: string, encoding: 'utf8'): Promise<string>;
async function readRequired(path: string, encoding?: 'utf8'): Promise<Buffer | string> {
  try {
    return encoding === undefined ? await readFile(path) : await readFile(path, encoding);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new CheckpointError('invalid-argument', path, 'not found: a Hugging Face GPT-2 folder holds config.json and model.safetensors');
    throw error;
  }
}

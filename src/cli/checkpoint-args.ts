/**
 * Implements: the `checkpoint` command line (convert, inspect, export, import): its options and help, and
 * `CheckpointCommand`. checkpoint.ts runs it.
 * Apart from checkpoint.ts so that parsing and help load none of the command's dependencies (train's
 * include tfjs): args.ts imports every command's spec, main.ts loads checkpoint.ts only to run it.
 */
import { parseOverrides } from '../config/overrides.ts';
import { closestMatch } from '../config/suggest.ts';
import { checkOverrides, PROGRAM, UsageError, type CommandSpec, type ParsedValues } from './command-spec.ts';

export const CHECKPOINT_ACTIONS = ['convert', 'inspect', 'export', 'import'] as const;

/** The formats `checkpoint export` writes. */
export const EXPORT_FORMATS = ['hf-gpt2'] as const;

/** The config keys `checkpoint convert --set` takes, and the layout field each sets. */
export const CONVERT_KEYS = { 'parallel.data': 'data', 'parallel.pipeline': 'pipeline', 'parallel.tensor.size': 'tensor', numChunks: 'numChunks' } as const;

export type CheckpointCommand =
  | {
      command: 'checkpoint';
      action: 'convert';
      /** A checkpoint folder, or a run folder meaning its latest checkpoint. */
      source: string;
      out: string;
      /** Only the sizes given; the others keep the source's. */
      layout: { data?: number; pipeline?: number; tensor?: number; numChunks?: number };
    }
  | { command: 'checkpoint'; action: 'inspect'; source: string; json: boolean }
  /** A checkpoint (or run folder) to a Hugging Face GPT-2 folder. */
  | { command: 'checkpoint'; action: 'export'; source: string; out: string; format: (typeof EXPORT_FORMATS)[number] }
  /** A Hugging Face GPT-2 folder to a run folder with a step-0 checkpoint. */
  | { command: 'checkpoint'; action: 'import'; source: string; out: string };

export const CHECKPOINT_SPEC: CommandSpec<CheckpointCommand> = {
  summary: 'convert a checkpoint to another parallel layout, inspect and verify one, or exchange one with Hugging Face',
  usage: 'convert|inspect|export|import <checkpoint|run-folder|hf-folder> [--out DIR] [--set KEY=VALUE ...] [--format hf-gpt2] [--json]',
  description:
    'convert writes the checkpoint in another data x pipeline x tensor layout, as a new run folder\n' +
    '(DIR/checkpoints/step-NNNNNN with its manifest, checksums and `latest`); DIR must not exist or be\n' +
    'empty. The layout is set with the keys train takes: --set parallel.data=D, parallel.pipeline=P,\n' +
    'parallel.tensor.size=T, numChunks=V; keys not given keep the source\'s values. Resume it with\n' +
    'train --resume DIR in that layout. (train --resume also loads any layout directly.)\n' +
    'inspect checks every file against the manifest (size, SHA-256, tensors, coverage) and prints\n' +
    'the step, layout, parameters and files; it exits 1 naming every problem when one is refused.\n' +
    'export --format hf-gpt2 writes the weights as a Hugging Face GPT-2 folder (model.safetensors,\n' +
    'float32, GPT-2\'s names and Conv1D layouts, and config.json) that transformers\' GPT2LMHeadModel\n' +
    'loads. import reads such a folder (e.g. the real GPT-2 from the hub) into a run folder whose\n' +
    'step-0 checkpoint train --resume fine-tunes in any layout (give it a config with the same model).',
  options: {
    out: { type: 'string', short: 'o', placeholder: 'DIR', doc: 'convert: the new run folder (must not exist, or be empty)' },
    set: { type: 'string', multiple: true, placeholder: 'KEY=VALUE', doc: `convert: the target layout, by the config keys\n${Object.keys(CONVERT_KEYS).join(', ')}` },
    json: { type: 'boolean', doc: 'inspect: print the report as JSON' },
    format: { type: 'string', placeholder: 'FORMAT', doc: `export: the format to write: ${EXPORT_FORMATS.join(' | ')}` },
  },
  examples: [
    `${PROGRAM} checkpoint inspect runs/a`,
    `${PROGRAM} checkpoint convert runs/a --out runs/b --set parallel.pipeline=1 --set parallel.tensor.size=1`,
    `${PROGRAM} checkpoint convert runs/a/checkpoints/step-000040 --out runs/b --set parallel.data=2`,
    `${PROGRAM} checkpoint export runs/a --format hf-gpt2 --out hf/a`,
    `${PROGRAM} checkpoint import hf/gpt2 --out runs/gpt2`,
  ],
  build: buildCheckpointCommand,
};

function buildCheckpointCommand(values: ParsedValues, positionals: string[], usage: string): CheckpointCommand {
  const [action, source, ...extra] = positionals;
  if (action === undefined) throw new UsageError(`checkpoint needs an action: ${CHECKPOINT_ACTIONS.join(' or ')}`, usage);
  if (!(CHECKPOINT_ACTIONS as readonly string[]).includes(action)) {
    const guess = closestMatch(action, CHECKPOINT_ACTIONS);
    throw new UsageError(`unknown checkpoint action "${action}"; ${guess === undefined ? `use ${CHECKPOINT_ACTIONS.join(' or ')}` : `did you mean "${guess}"?`}`, usage);
  }
  if (source === undefined || source === '') throw new UsageError(`checkpoint ${action} needs ${action === 'import' ? 'a Hugging Face GPT-2 folder' : 'a checkpoint folder or a run folder'}`, usage);
  if (extra.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(extra[0])}; checkpoint ${action} takes one folder`, usage);
  const sets = (values.set as string[] | undefined) ?? [];
  const out = values.out as string | undefined;
  const format = values.format as string | undefined;
  if (format !== undefined && action !== 'export') throw new UsageError('--format belongs to checkpoint export', usage);
  if (action === 'export' || action === 'import') {
    if (sets.length > 0 || values.json === true) throw new UsageError(`checkpoint ${action} takes --out${action === 'export' ? ' and --format' : ''} only`, usage);
    if (out === undefined || out === '') throw new UsageError(`checkpoint ${action} needs --out DIR, a new folder`, usage);
    if (action === 'import') return { command: 'checkpoint', action, source, out };
    if (format === undefined) throw new UsageError(`checkpoint export needs --format (${EXPORT_FORMATS.join(' or ')})`, usage);
    if (!(EXPORT_FORMATS as readonly string[]).includes(format)) throw new UsageError(`unknown --format "${format}"; export writes ${EXPORT_FORMATS.join(', ')}`, usage);
    return { command: 'checkpoint', action, source, out, format: format as (typeof EXPORT_FORMATS)[number] };
  }
  if (action === 'inspect') {
    if (out !== undefined || sets.length > 0) throw new UsageError('--out and --set belong to checkpoint convert; inspect only reads', usage);
    return { command: 'checkpoint', action: 'inspect', source, json: values.json === true };
  }
  if (values.json === true) throw new UsageError('--json belongs to checkpoint inspect', usage);
  if (out === undefined || out === '') throw new UsageError('checkpoint convert needs --out DIR, a new folder for the converted checkpoint', usage);
  checkOverrides(sets, usage);
  const layout: { data?: number; pipeline?: number; tensor?: number; numChunks?: number } = {};
  for (const { key, value, item } of parseOverrides(sets)) {
    if (!Object.hasOwn(CONVERT_KEYS, key)) {
      throw new UsageError(
        `--set ${item}: convert changes only the layout (${Object.keys(CONVERT_KEYS).join(', ')}); ${key} is set when you resume with train`,
        usage,
      );
    }
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) {
      throw new UsageError(`--set ${item}: ${key} must be a positive integer, got ${JSON.stringify(value)}`, usage);
    }
    layout[CONVERT_KEYS[key as keyof typeof CONVERT_KEYS]] = value;
  }
  return { command: 'checkpoint', action: 'convert', source, out, layout };
}

/**
 * Implements: the `eval` command line: its options and help, and `EvalCommand`. eval.ts runs it.
 * Apart from eval.ts so that parsing and help load none of its dependencies (tfjs).
 */
import { BACKEND_NAMES, type BackendName } from '../backend/names.ts';
import { backendOption, positiveInteger, PROGRAM, UsageError, type CommandSpec, type ParsedValues } from './command-spec.ts';

export interface EvalCommand {
  command: 'eval';
  /** A checkpoint folder, or a run folder meaning its latest checkpoint. */
  source: string;
  data: string;
  /** Default: the checkpoint's config's. */
  batchSize?: number;
  seqLen?: number;
  maxBatches?: number;
  skipBadLines: boolean;
  backend?: BackendName;
}

export const EVAL_SPEC: CommandSpec<EvalCommand> = {
  summary: 'loss and perplexity of a checkpoint of any layout on a text file',
  usage: '<checkpoint|run-folder> --data FILE [--batch-size N] [--seq-len N] [--max-batches N] [--skip-bad-lines]',
  description:
    'Loads the whole model from a checkpoint of any parallel layout, tokenizes FILE (loose JSON, one\n' +
    '{"text": ...} per line, as training reads it) with the run\'s seqLen, and prints the mean\n' +
    'next-token cross-entropy (the training objective, no dropout) and the perplexity exp(loss) over\n' +
    'the samples in file order.',
  options: {
    data: { type: 'string', placeholder: 'FILE', doc: 'the text to evaluate on' },
    'batch-size': { type: 'string', placeholder: 'N', doc: "samples per forward [the run's batchSize]" },
    'seq-len': { type: 'string', placeholder: 'N', doc: "tokens per sample [the run's seqLen]" },
    'max-batches': { type: 'string', placeholder: 'N', doc: 'evaluate at most N batches [all]' },
    'skip-bad-lines': { type: 'boolean', doc: 'count and skip malformed lines instead of failing' },
    backend: { type: 'string', placeholder: 'NAME', doc: `compute backend: ${BACKEND_NAMES.join(' | ')}\n(default: the fastest installed)` },
  },
  examples: [`${PROGRAM} eval runs/tiny --data data/brown-sample.jsonl`, `${PROGRAM} eval runs/a/checkpoints/step-000040 --data valid.jsonl --max-batches 20`],
  build: buildEval,
};

function buildEval(values: ParsedValues, positionals: string[], usage: string): EvalCommand {
  const [source, ...extra] = positionals;
  if (source === undefined || source === '') throw new UsageError('eval needs a checkpoint folder or a run folder', usage);
  if (extra.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(extra[0])}; eval takes one checkpoint and --data FILE`, usage);
  const data = values.data as string | undefined;
  if (data === undefined || data === '') throw new UsageError('eval needs --data FILE, the text to evaluate on', usage);
  const command: EvalCommand = { command: 'eval', source, data, skipBadLines: values['skip-bad-lines'] === true };
  const batchSize = positiveInteger(values['batch-size'] as string | undefined, '--batch-size', usage);
  if (batchSize !== undefined) command.batchSize = batchSize;
  const seqLen = positiveInteger(values['seq-len'] as string | undefined, '--seq-len', usage);
  if (seqLen === 1) throw new UsageError('--seq-len must be at least 2: each position predicts the next token', usage);
  if (seqLen !== undefined) command.seqLen = seqLen;
  const maxBatches = positiveInteger(values['max-batches'] as string | undefined, '--max-batches', usage);
  if (maxBatches !== undefined) command.maxBatches = maxBatches;
  const backend = backendOption(values.backend as string | undefined, usage);
  if (backend !== undefined) command.backend = backend;
  return command;
}

/**
 * Implements: the `generate` command line: its options and help, and `GenerateCommand`. generate.ts
 * runs it. Apart from generate.ts so that parsing and help load none of its dependencies (tfjs):
 * args.ts imports every command's spec, main.ts loads generate.ts only to run it.
 */
import { BACKEND_NAMES, type BackendName } from '../backend/names.ts';
import { samplingProblems, type SamplingOptions } from '../generate/sampling.ts';
import { backendOption, positiveInteger, PROGRAM, UsageError, type CommandSpec, type ParsedValues } from './command-spec.ts';

export const DEFAULT_MAX_NEW_TOKENS = 50;
export const DEFAULT_GENERATE_SEED = 42;

export interface GenerateCommand extends SamplingOptions {
  command: 'generate';
  /** A checkpoint folder, or a run folder meaning its latest checkpoint. */
  source: string;
  prompt: string;
  maxNewTokens: number;
  seed: number;
  backend?: BackendName;
}

export const GENERATE_SPEC: CommandSpec<GenerateCommand> = {
  summary: 'generate text from a checkpoint of any layout',
  usage: '<checkpoint|run-folder> --prompt TEXT [--max-new-tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed S]',
  description:
    'Loads the whole model from a checkpoint of any parallel layout (its pieces reassembled by global\n' +
    'name), encodes the prompt with the GPT-2 tokenizer and prints it followed by the new tokens. The\n' +
    'prompt goes through the model once; each new token then costs one position\'s forward (a key/value\n' +
    'cache). Temperature 0 is greedy; otherwise tokens are sampled from softmax(logits / T), kept to the\n' +
    'top k and the top-p nucleus when given, with a seeded stream: the same seed gives the same text.\n' +
    'Generation stops at <|endoftext|>, after N tokens, or when the model\'s context is full.',
  options: {
    prompt: { type: 'string', short: 'p', placeholder: 'TEXT', doc: 'the text to continue ("" starts from <|endoftext|>)' },
    'max-new-tokens': { type: 'string', short: 'n', placeholder: 'N', doc: `tokens to generate at most [${DEFAULT_MAX_NEW_TOKENS}]` },
    temperature: { type: 'string', placeholder: 'T', doc: 'softmax temperature; 0 = greedy [1]' },
    'top-k': { type: 'string', placeholder: 'K', doc: 'sample among the K most likely tokens' },
    'top-p': { type: 'string', placeholder: 'P', doc: 'sample among the most likely tokens whose probability adds up to P, in (0, 1]' },
    seed: { type: 'string', placeholder: 'S', doc: `seed of the sampling stream [${DEFAULT_GENERATE_SEED}]` },
    backend: { type: 'string', placeholder: 'NAME', doc: `compute backend: ${BACKEND_NAMES.join(' | ')}\n(default: the checkpoint's config's, else the fastest installed)` },
  },
  examples: [
    `${PROGRAM} generate runs/tiny --prompt "The jury said" --temperature 0`,
    `${PROGRAM} generate runs/tiny/checkpoints/step-000030 --prompt "It was" -n 100 --top-k 40 --seed 7`,
  ],
  build: buildGenerate,
};

function buildGenerate(values: ParsedValues, positionals: string[], usage: string): GenerateCommand {
  const [source, ...extra] = positionals;
  if (source === undefined || source === '') throw new UsageError('generate needs a checkpoint folder or a run folder', usage);
  if (extra.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(extra[0])}; give the prompt with --prompt`, usage);
  const prompt = values.prompt as string | undefined;
  if (prompt === undefined) throw new UsageError('generate needs --prompt TEXT (--prompt "" starts from <|endoftext|>)', usage);
  const number = (flag: string): number | undefined => {
    const text = values[flag] as string | undefined;
    if (text === undefined) return undefined;
    const value = Number(text);
    if (text.trim() === '' || !Number.isFinite(value)) throw new UsageError(`--${flag} must be a number, got "${text}"`, usage);
    return value;
  };
  const command: GenerateCommand = {
    command: 'generate',
    source,
    prompt,
    maxNewTokens: positiveInteger(values['max-new-tokens'] as string | undefined, '--max-new-tokens', usage) ?? DEFAULT_MAX_NEW_TOKENS,
    temperature: number('temperature') ?? 1,
    seed: positiveInteger(values.seed as string | undefined, '--seed', usage, 0) ?? DEFAULT_GENERATE_SEED,
  };
  const topK = number('top-k');
  if (topK !== undefined) command.topK = topK;
  const topP = number('top-p');
  if (topP !== undefined) command.topP = topP;
  const problems = samplingProblems(command);
  if (problems.length > 0) throw new UsageError(problems.join('; '), usage);
  const backend = backendOption(values.backend as string | undefined, usage);
  if (backend !== undefined) command.backend = backend;
  return command;
}

/**
 * Implements: `gpt-hybrid generate`: loads the whole model of a checkpoint (generate/load-model.ts),
 * generates (generate/generate.ts) and prints the prompt with its continuation on stdout; what was
 * loaded and how it ended go to stderr, so stdout holds the text alone.
 */
import { generateText } from '../generate/generate.ts';
import { withCheckpointModel } from '../generate/load-model.ts';
import type { GenerateCommand } from './generate-args.ts';

const ENDS = {
  'max-new-tokens': (n: number) => `${n} new tokens`,
  'end-of-text': (n: number) => `<|endoftext|> after ${n} new tokens`,
  'context-full': (n: number) => `the model's context full after ${n} new tokens`,
};

export async function runGenerate(command: GenerateCommand): Promise<number> {
  const log = (line: string) => process.stderr.write(`${line}\n`);
  return withCheckpointModel(command.source, command.backend, log, async ({ model, config, dir, step }) => {
    const m = config.model;
    log(`model of ${dir} (after step ${step}): ${m.numLayers} layers, hidden ${m.hiddenSize}, vocab ${m.vocabSize}, context ${m.maxPositionEmbeddings}`);
    const progress = process.stderr.isTTY === true ? (done: number, total: number) => process.stderr.write(`\rgenerating: ${done}/${total} tokens\x1b[K`) : undefined;
    const generated = await generateText(model, command, progress);
    if (progress !== undefined) process.stderr.write('\r\x1b[K');
    process.stdout.write(`${generated.text}\n`);
    log(`prompt ${generated.promptIds.length} tokens; stopped at ${ENDS[generated.end](generated.newIds.length)}`);
    return 0;
  });
}

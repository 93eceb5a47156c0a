/**
 * Implements: the versioned binary file that caches a tokenized dataset next to its loose-JSON input, so a
 * second run (and every rank of a parallel job) skips tokenization.
 *
 * Layout, all integers little-endian:
 *   0   8 bytes  magic "GPTHTOK\n"
 *   8   u32      format version (TOKEN_CACHE_VERSION)
 *   12  u32      seqLen
 *   16  u32      numSamples
 *   20  u32      badLines skipped while building
 *   24  u32      vocabulary size, 28 u32 pad id (guard against a cache made with another tokenizer)
 *   32  32 bytes SHA-256 of the input file
 *   64  32 bytes SHA-256 of the payload
 *   96  payload: numSamples*seqLen u16 token ids (row-major, padded), then numSamples u32 real lengths
 * Ids fit in u16 because GPT-2's vocabulary has 50257 entries; the attention mask is rebuilt from the lengths.
 */
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';

export const TOKEN_CACHE_MAGIC = 'GPTHTOK\n';
export const TOKEN_CACHE_VERSION = 1;
const HEADER_BYTES = 96;
const HASH_BYTES = 32;

export interface TokenCacheContents {
  seqLen: number;
  numSamples: number;
  badLines: number;
  vocabSize: number;
  padId: number;
  /** SHA-256 of the input file, hex. */
  inputHash: string;
  /** numSamples*seqLen ids, padding included. */
  inputIds: Int32Array;
  /** Real (unpadded) token count of each sample. */
  lengths: Uint32Array;
}

export class TokenCacheError extends Error {
  constructor(
    readonly path: string,
    readonly reason: string,
  ) {
    super(`token cache ${path} is unusable: ${reason}`);
    this.name = 'TokenCacheError';
  }
}

export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

export function encodeTokenCache(contents: TokenCacheContents): Uint8Array {
  const { seqLen, numSamples, inputIds, lengths } = contents;
  if (inputIds.length !== numSamples * seqLen || lengths.length !== numSamples) {
    throw new Error(
      `encodeTokenCache: expected ${numSamples}x${seqLen} ids and ${numSamples} lengths, ` +
        `got ${inputIds.length} ids and ${lengths.length} lengths`,
    );
  }
  if (contents.vocabSize > 0x10000) throw new Error(`encodeTokenCache: vocabulary ${contents.vocabSize} does not fit u16 ids`);
  const payloadBytes = inputIds.length * 2 + lengths.length * 4;
  const bytes = new Uint8Array(HEADER_BYTES + payloadBytes);
  const view = new DataView(bytes.buffer);
  bytes.set(new TextEncoder().encode(TOKEN_CACHE_MAGIC), 0);
  view.setUint32(8, TOKEN_CACHE_VERSION, true);
  view.setUint32(12, seqLen, true);
  view.setUint32(16, numSamples, true);
  view.setUint32(20, contents.badLines, true);
  view.setUint32(24, contents.vocabSize, true);
  view.setUint32(28, contents.padId, true);
  bytes.set(hexToBytes(contents.inputHash), 32);
  let offset = HEADER_BYTES;
  for (let i = 0; i < inputIds.length; i++, offset += 2) view.setUint16(offset, inputIds[i], true);
  for (let i = 0; i < lengths.length; i++, offset += 4) view.setUint32(offset, lengths[i], true);
  bytes.set(createHash('sha256').update(bytes.subarray(HEADER_BYTES)).digest(), 64);
  return bytes;
}

/** Throws TokenCacheError saying what is wrong when the bytes are not a complete, intact cache. */
export function decodeTokenCache(bytes: Uint8Array, path: string): TokenCacheContents {
  if (bytes.length < HEADER_BYTES) throw new TokenCacheError(path, `${bytes.length} bytes is shorter than the ${HEADER_BYTES}-byte header`);
  const magic = new TextDecoder().decode(bytes.subarray(0, 8));
  if (magic !== TOKEN_CACHE_MAGIC) throw new TokenCacheError(path, `bad magic ${JSON.stringify(magic)}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getUint32(8, true);
  if (version !== TOKEN_CACHE_VERSION) throw new TokenCacheError(path, `format version ${version}, this code reads ${TOKEN_CACHE_VERSION}`);
  const seqLen = view.getUint32(12, true);
  const numSamples = view.getUint32(16, true);
  const expectedBytes = HEADER_BYTES + numSamples * seqLen * 2 + numSamples * 4;
  if (bytes.length !== expectedBytes) {
    throw new TokenCacheError(path, `${bytes.length} bytes, expected ${expectedBytes} for ${numSamples}x${seqLen} (truncated?)`);
  }
  const payloadHash = createHash('sha256').update(bytes.subarray(HEADER_BYTES)).digest();
  if (!payloadHash.equals(bytes.subarray(64, 64 + HASH_BYTES))) throw new TokenCacheError(path, 'payload checksum mismatch');
  const inputIds = new Int32Array(numSamples * seqLen);
  const lengths = new Uint32Array(numSamples);
  const vocabSize = view.getUint32(24, true);
  let offset = HEADER_BYTES;
  // The checksum says the bytes are whole, not that whoever wrote them was this code: every id and
  // length is checked, since one id past the vocabulary would break every later run's lookups.
  for (let i = 0; i < inputIds.length; i++, offset += 2) {
    const id = view.getUint16(offset, true);
    if (id >= vocabSize) throw new TokenCacheError(path, `token id ${id} of sample ${Math.floor(i / seqLen)} is outside the vocabulary of ${vocabSize}`);
    inputIds[i] = id;
  }
  for (let i = 0; i < numSamples; i++, offset += 4) {
    const length = view.getUint32(offset, true);
    if (length > seqLen) throw new TokenCacheError(path, `sample ${i} claims ${length} tokens, more than the ${seqLen} a sample holds`);
    lengths[i] = length;
  }
  return {
    seqLen,
    numSamples,
    badLines: view.getUint32(20, true),
    vocabSize,
    padId: view.getUint32(28, true),
    inputHash: Buffer.from(bytes.subarray(32, 32 + HASH_BYTES)).toString('hex'),
    inputIds,
    lengths,
  };
}

export function readTokenCache(path: string): TokenCacheContents {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    throw new TokenCacheError(path, `cannot read it (${(err as Error).message})`);
  }
  return decodeTokenCache(bytes, path);
}

/**
 * Writes to a temporary name in the same directory, fsyncs, then renames: a reader sees either no cache or a
 * whole one, never a half-written file, even when several ranks build the same cache at once.
 */
export function writeTokenCacheAtomic(path: string, contents: TokenCacheContents): void {
  const bytes = encodeTokenCache(contents);
  const tmpPath = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    const fd = openSync(tmpPath, 'wx');
    try {
      writeSync(fd, bytes);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmpPath, path);
  } catch (err) {
    try {
      rmSync(tmpPath, { force: true });
    } catch {
      // The original error (usually a read-only directory) is the one worth reporting.
    }
    throw err;
  }
}

function hexToBytes(hex: string): Uint8Array {
  if (!/^[0-9a-f]{64}$/.test(hex)) throw new Error(`expected a SHA-256 hex digest, got ${JSON.stringify(hex)}`);
  return Uint8Array.from(Buffer.from(hex, 'hex'));
}

/**
 * Implements: the safetensors file layout (huggingface/safetensors, docs "Format" section), written and read
 * exactly, with every field of a file checked before a byte of tensor data is trusted.
 *
 *   [8 bytes: N, unsigned 64-bit little-endian]
 *   [N bytes: UTF-8 JSON object, starting with '{', padded at the end with spaces (0x20) to a multiple of 8]
 *       { "<name>": { "dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end] }, ...,
 *         "__metadata__": { "<key>": "<string value>" } }
 *   [the data buffer: every tensor's raw little-endian bytes, row-major]
 *
 * Offsets are relative to the first byte after the header. The reference reader requires the tensors'
 * byte ranges to tile the data buffer exactly (sorted by offset: no gap, no overlap, the last ending at the
 * end of the file), `end - begin` to equal product(shape) x dtype size, and caps N at 100,000,000; so does
 * this one. The 8-byte padding keeps the data buffer 8-aligned within the file, so a Float32Array can view
 * the file's bytes in place when the buffer holding the file is aligned.
 *
 * Hostile input: names come from an untrusted file, so they go into Maps, never onto plain objects
 * (`__proto__` is just another name here), and JSON.parse's silent "last duplicate wins" is caught by a
 * scan of the top-level keys.
 */
import { endianness } from 'node:os';
import { CheckpointError } from './errors.ts';

/** Every dtype of the format, with its size in bytes. */
export const DTYPE_BYTES = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E5M2: 1,
  F8_E4M3: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  F64: 8,
  I64: 8,
  U64: 8,
} as const;

export type Dtype = keyof typeof DTYPE_BYTES;

/** The reference implementation's limit on N, which keeps a corrupt length from asking for gigabytes. */
export const MAX_HEADER_BYTES = 100_000_000;

const METADATA_KEY = '__metadata__';
const ENTRY_FIELDS = new Set(['dtype', 'shape', 'data_offsets']);

export interface TensorToWrite {
  dtype: Dtype;
  shape: readonly number[];
  /** The raw elements, row-major; its byteLength must be product(shape) x dtype size. */
  data: ArrayBufferView;
}

export interface SafetensorsEntry {
  dtype: Dtype;
  shape: number[];
  /** [begin, end) in the data buffer. */
  dataOffsets: [number, number];
}

function isDtype(value: unknown): value is Dtype {
  return typeof value === 'string' && Object.hasOwn(DTYPE_BYTES, value);
}

function elementCount(shape: readonly number[]): number {
  return shape.reduce((n, dim) => n * dim, 1);
}

function requireLittleEndianHost(): void {
  // Typed-array views use the host's byte order; the format is little-endian.
  if (endianness() !== 'LE') throw new Error('safetensors files are little-endian; this code needs a little-endian host');
}

/**
 * The file as chunks to write in order: the 8-byte length and padded header, then each tensor's bytes (views
 * of the caller's arrays, not copies). Tensors are laid out by dtype size, largest first (as the reference
 * writer does, so every tensor stays aligned to its element size), keeping the caller's order otherwise.
 */
export function serializeSafetensors(
  tensors: ReadonlyMap<string, TensorToWrite>,
  metadata: Readonly<Record<string, string>> = {},
  source = 'safetensors',
): Uint8Array[] {
  requireLittleEndianHost();
  const ordered = [...tensors].sort(([, a], [, b]) => DTYPE_BYTES[b.dtype] - DTYPE_BYTES[a.dtype]);
  const chunks: Uint8Array[] = [];
  // Built with explicit entries on a null-prototype object so a tensor called `__proto__` is written as one.
  const header: Record<string, unknown> = Object.create(null);
  const metadataEntries = Object.entries(metadata);
  if (metadataEntries.length > 0) {
    const copy: Record<string, string> = Object.create(null);
    for (const [key, value] of metadataEntries) {
      if (typeof value !== 'string') {
        throw new CheckpointError('invalid-argument', source, `metadata ${JSON.stringify(key)} must be a string, got ${typeof value}`);
      }
      copy[key] = value;
    }
    header[METADATA_KEY] = copy;
  }
  let offset = 0;
  for (const [name, tensor] of ordered) {
    if (name === METADATA_KEY) throw new CheckpointError('invalid-argument', source, `a tensor may not be called ${METADATA_KEY}`);
    if (!isDtype(tensor.dtype)) throw new CheckpointError('invalid-argument', source, `tensor ${name}: unknown dtype ${String(tensor.dtype)}`);
    if (!tensor.shape.every((dim) => Number.isSafeInteger(dim) && dim >= 0)) {
      throw new CheckpointError('invalid-argument', source, `tensor ${name}: shape [${tensor.shape}] must hold non-negative integers`);
    }
    const byteLength = elementCount(tensor.shape) * DTYPE_BYTES[tensor.dtype];
    if (tensor.data.byteLength !== byteLength) {
      throw new CheckpointError(
        'invalid-argument',
        source,
        `tensor ${name}: ${tensor.data.byteLength} bytes of data for ${tensor.dtype} shape [${tensor.shape}], which needs ${byteLength}`,
      );
    }
    header[name] = { dtype: tensor.dtype, shape: [...tensor.shape], data_offsets: [offset, offset + byteLength] };
    chunks.push(new Uint8Array(tensor.data.buffer, tensor.data.byteOffset, byteLength));
    offset += byteLength;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8;
  const prefix = new Uint8Array(8 + padded).fill(0x20, 8 + json.length);
  new DataView(prefix.buffer).setBigUint64(0, BigInt(padded), true);
  prefix.set(json, 8);
  return [prefix, ...chunks];
}

/** A parsed safetensors file whose header has been checked against the bytes it describes. */
export class SafetensorsFile {
  constructor(
    /** Where the bytes came from, for error messages. */
    readonly source: string,
    readonly tensors: ReadonlyMap<string, SafetensorsEntry>,
    readonly metadata: ReadonlyMap<string, string>,
    /** The data buffer (everything after the header). */
    private readonly data: Uint8Array,
  ) {}

  entry(name: string): SafetensorsEntry {
    const entry = this.tensors.get(name);
    if (entry === undefined) {
      throw new CheckpointError('format', this.source, `no tensor ${JSON.stringify(name)} (the file holds ${this.tensors.size} tensors)`);
    }
    return entry;
  }

  /** The tensor's raw bytes, a view into the file. */
  bytes(name: string): Uint8Array {
    const [begin, end] = this.entry(name).dataOffsets;
    return this.data.subarray(begin, end);
  }

  /** A view of the file's bytes when they are 4-aligned in memory, else a copy. */
  float32(name: string): Float32Array {
    return this.typed(name, 'F32', Float32Array);
  }

  int32(name: string): Int32Array {
    return this.typed(name, 'I32', Int32Array);
  }

  private typed<T extends Float32Array | Int32Array>(
    name: string,
    dtype: Dtype,
    Kind: { new (buffer: ArrayBufferLike, byteOffset: number, length: number): T; new (length: number): T },
  ): T {
    const entry = this.entry(name);
    if (entry.dtype !== dtype) {
      throw new CheckpointError('format', this.source, `tensor ${name} is ${entry.dtype}, not ${dtype}`);
    }
    requireLittleEndianHost();
    const bytes = this.bytes(name);
    const length = bytes.byteLength / 4;
    if (bytes.byteOffset % 4 === 0) return new Kind(bytes.buffer, bytes.byteOffset, length);
    const copy = new Kind(length);
    new Uint8Array(copy.buffer).set(bytes);
    return copy;
  }
}

/** Parses and checks a whole file held in memory; throws CheckpointError('format' | 'truncated') naming `source`. */
export function parseSafetensors(bytes: Uint8Array, source: string): SafetensorsFile {
  const fail = (detail: string, problem: 'format' | 'truncated' = 'format'): never => {
    throw new CheckpointError(problem, source, `${detail} (not a valid safetensors file)`);
  };
  if (bytes.byteLength < 8) fail(`${bytes.byteLength} bytes is shorter than the 8-byte header length`, 'truncated');
  const declared = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  if (declared > BigInt(MAX_HEADER_BYTES)) fail(`header length ${declared} exceeds the format's limit of ${MAX_HEADER_BYTES} bytes`);
  const headerLength = Number(declared);
  if (8 + headerLength > bytes.byteLength) {
    fail(`header length ${headerLength} runs past the end of the ${bytes.byteLength}-byte file`, 'truncated');
  }
  const headerBytes = bytes.subarray(8, 8 + headerLength);
  if (headerBytes[0] !== 0x7b) fail(`the header must start with '{' (byte 8 is ${headerBytes[0] ?? 'missing'})`);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
  } catch {
    return fail('the header is not valid UTF-8');
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (error) {
    return fail(`the header is not JSON: ${(error as Error).message}`);
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) fail('the header is not a JSON object');
  const duplicate = firstDuplicateTopLevelKey(text);
  if (duplicate !== undefined) fail(`the header names ${JSON.stringify(duplicate)} twice`);

  const data = bytes.subarray(8 + headerLength);
  const tensors = new Map<string, SafetensorsEntry>();
  const metadata = new Map<string, string>();
  for (const name of Object.keys(header as object)) {
    const value: unknown = (header as Record<string, unknown>)[name];
    if (name === METADATA_KEY) {
      if (value === null || typeof value !== 'object' || Array.isArray(value)) fail(`${METADATA_KEY} must be an object of strings`);
      for (const key of Object.keys(value as object)) {
        const item: unknown = (value as Record<string, unknown>)[key];
        if (typeof item !== 'string') fail(`${METADATA_KEY} ${JSON.stringify(key)} is ${typeof item}, not a string`);
        metadata.set(key, item as string);
      }
      continue;
    }
    tensors.set(name, checkEntry(name, value, fail));
  }

  // The byte ranges, in offset order, must tile the data buffer.
  const byOffset = [...tensors].sort(([, a], [, b]) => a.dataOffsets[0] - b.dataOffsets[0] || a.dataOffsets[1] - b.dataOffsets[1]);
  let expected = 0;
  for (const [name, entry] of byOffset) {
    const [begin, end] = entry.dataOffsets;
    if (begin !== expected) {
      fail(begin < expected ? `tensor ${name} at bytes [${begin}, ${end}) overlaps the tensor before it` : `a gap before tensor ${name}: bytes [${expected}, ${begin}) belong to no tensor`);
    }
    if (end > data.byteLength) fail(`tensor ${name} ends at byte ${end} of a ${data.byteLength}-byte data buffer`, 'truncated');
    expected = end;
  }
  if (expected !== data.byteLength) {
    fail(`the tensors cover ${expected} bytes but the data buffer has ${data.byteLength}`, expected > data.byteLength ? 'truncated' : 'format');
  }
  return new SafetensorsFile(source, tensors, metadata, data);
}

function checkEntry(name: string, value: unknown, fail: (detail: string) => never): SafetensorsEntry {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) fail(`tensor ${JSON.stringify(name)} is not an object`);
  const record = value as Record<string, unknown>;
  for (const key of Object.keys(record)) {
    if (!ENTRY_FIELDS.has(key)) fail(`tensor ${JSON.stringify(name)} has an unknown field ${JSON.stringify(key)}`);
  }
  const dtype = Object.hasOwn(record, 'dtype') ? record.dtype : undefined;
  const shape = Object.hasOwn(record, 'shape') ? record.shape : undefined;
  const offsets = Object.hasOwn(record, 'data_offsets') ? record.data_offsets : undefined;
  if (!isDtype(dtype)) fail(`tensor ${JSON.stringify(name)} has unknown dtype ${JSON.stringify(dtype) ?? 'undefined'}`);
  const isIndex = (n: unknown): n is number => typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;
  if (!Array.isArray(shape) || !shape.every(isIndex)) fail(`tensor ${JSON.stringify(name)} has a shape that is not a list of non-negative integers`);
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isIndex) || offsets[0] > offsets[1]) {
    fail(`tensor ${JSON.stringify(name)} has data_offsets that are not [begin, end] with 0 <= begin <= end`);
  }
  const elements = elementCount(shape as number[]);
  const byteLength = elements * DTYPE_BYTES[dtype as Dtype];
  const [begin, end] = offsets as [number, number];
  if (!Number.isSafeInteger(byteLength) || byteLength !== end - begin) {
    fail(`tensor ${JSON.stringify(name)}: ${dtype} shape [${shape}] needs ${byteLength} bytes but data_offsets [${begin}, ${end}) span ${end - begin}`);
  }
  return { dtype: dtype as Dtype, shape: [...(shape as number[])], dataOffsets: [begin, end] };
}

/**
 * The first key that occurs twice at the top level of `text`, which must already be valid JSON for an
 * object. JSON.parse keeps the last duplicate silently; a file naming a tensor twice is corrupt.
 */
function firstDuplicateTopLevelKey(text: string): string | undefined {
  const seen = new Set<string>();
  let depth = 0;
  let i = 0;
  let expectKey = false;
  while (i < text.length) {
    const c = text[i]!;
    if (c === '"') {
      const start = i;
      i++;
      while (text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
      i++;
      if (depth === 1 && expectKey) {
        const key = JSON.parse(text.slice(start, i)) as string;
        if (seen.has(key)) return key;
        seen.add(key);
        expectKey = false;
      }
      continue;
    }
    if (c === '{' || c === '[') {
      depth++;
      if (depth === 1) expectKey = true;
    } else if (c === '}' || c === ']') depth--;
    else if (c === ',' && depth === 1) expectKey = true;
    i++;
  }
  return undefined;
}

// Tests: the safetensors layout (src/checkpoint/safetensors.ts): exact bytes, reading, and every check of the reader.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CheckpointError } from '../../src/checkpoint/errors.ts';
import { MAX_HEADER_BYTES, parseSafetensors, serializeSafetensors, type TensorToWrite } from '../../src/checkpoint/safetensors.ts';
import { concat } from './bytes.ts';


function ascii(text: string): number[] {
  return [...text].map((c) => c.charCodeAt(0));
}

/** A file from a header text (padded as given) and data bytes. */
function fileFrom(header: string, data: number[] | Uint8Array, declaredLength?: number): Uint8Array {
  const headerBytes = new TextEncoder().encode(header);
  const out = new Uint8Array(8 + headerBytes.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(declaredLength ?? headerBytes.length), true);
  out.set(headerBytes, 8);
  out.set(data, 8 + headerBytes.length);
  return out;
}

function expectFormatError(bytes: Uint8Array, pattern: RegExp, problem: 'format' | 'truncated' = 'format'): void {
  assert.throws(
    () => parseSafetensors(bytes, 'fixture.safetensors'),
    (error: unknown) => {
      assert.ok(error instanceof CheckpointError, `expected a CheckpointError, got ${String(error)}`);
      assert.equal(error.problem, problem);
      assert.equal(error.file, 'fixture.safetensors');
      assert.match(error.message, /^fixture\.safetensors: /);
      assert.match(error.message, pattern);
      return true;
    },
  );
}

// The bytes the reference writes for {"test": np.zeros((2, 2), int32)} (huggingface/safetensors,
// bindings/python/tests/test_simple.py, test_serialization): length 64 ('@'), the JSON, four spaces of padding.
const REFERENCE_FIXTURE = Uint8Array.from([
  0x40, 0, 0, 0, 0, 0, 0, 0,
  ...ascii('{"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}}    '),
  ...new Array<number>(16).fill(0),
]);

test('safetensors - writes the reference implementation\'s bytes exactly, padding the header with spaces to 8 bytes', () => {
  const tensors = new Map<string, TensorToWrite>([['test', { dtype: 'I32', shape: [2, 2], data: new Int32Array(4) }]]);
  assert.deepEqual(concat(serializeSafetensors(tensors)), REFERENCE_FIXTURE);
});

test('safetensors - reads a hand-built file: values, shapes, metadata last or first, little-endian floats', () => {
  const file = parseSafetensors(REFERENCE_FIXTURE, 'fixture.safetensors');
  assert.deepEqual([...file.tensors.keys()], ['test']);
  assert.deepEqual(file.entry('test'), { dtype: 'I32', shape: [2, 2], dataOffsets: [0, 16] });
  assert.deepEqual([...file.int32('test')], [0, 0, 0, 0]);

  // Float32 1.5 is 0x3fc00000, -2 is 0xc0000000; the metadata may come after the tensors (other writers do so).
  const header = '{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"__metadata__":{"step":"12"}}';
  const padded = header + ' '.repeat((8 - (header.length % 8)) % 8);
  const bytes = fileFrom(padded, [0, 0, 0xc0, 0x3f, 0, 0, 0, 0xc0]);
  const parsed = parseSafetensors(bytes, 'fixture.safetensors');
  assert.deepEqual([...parsed.float32('w')], [1.5, -2]);
  assert.deepEqual([...parsed.metadata], [['step', '12']]);
  assert.throws(() => parsed.int32('w'), /tensor w is F32, not I32/);
  assert.throws(() => parsed.float32('missing'), /no tensor "missing"/);
});

test('safetensors - round trip of mixed dtypes and empty and scalar tensors, with metadata first as the reference writes it', () => {
  const tensors = new Map<string, TensorToWrite>([
    ['flags', { dtype: 'U8', shape: [3], data: Uint8Array.from([1, 0, 1]) }],
    ['weights', { dtype: 'F32', shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6]) }],
    ['empty', { dtype: 'F32', shape: [0, 4], data: new Float32Array(0) }],
    ['scalar', { dtype: 'I32', shape: [], data: Int32Array.from([-7]) }],
    ['wide', { dtype: 'F64', shape: [1], data: Float64Array.from([Math.PI]) }],
  ]);
  const bytes = concat(serializeSafetensors(tensors, { format: 'pt', note: 'ü' }));
  const headerLength = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  assert.equal(headerLength % 8, 0);
  const headerText = new TextDecoder().decode(bytes.subarray(8, 8 + headerLength));
  assert.ok(headerText.startsWith('{"__metadata__":{"format":"pt","note":"ü"}'), headerText);
  const file = parseSafetensors(bytes, 'round-trip');
  assert.deepEqual([...file.float32('weights')], [1, 2, 3, 4, 5, 6]);
  assert.deepEqual([...file.bytes('flags')], [1, 0, 1]);
  assert.equal(file.float32('empty').length, 0);
  assert.deepEqual(file.entry('scalar').shape, []);
  assert.deepEqual([...file.int32('scalar')], [-7]);
  assert.equal(new DataView(file.bytes('wide').slice().buffer).getFloat64(0, true), Math.PI);
  // Largest dtype first, as the reference does, so every tensor stays aligned to its element size.
  assert.deepEqual(file.entry('wide').dataOffsets, [0, 8]);
  assert.equal(file.metadata.get('note'), 'ü');
});

test('safetensors - Float32 views share the file\'s memory when aligned and are copies when not', () => {
  const tensors = new Map<string, TensorToWrite>([['w', { dtype: 'F32', shape: [3], data: Float32Array.from([1, 2, 3]) }]]);
  const bytes = concat(serializeSafetensors(tensors));
  const aligned = parseSafetensors(bytes, 'aligned').float32('w');
  assert.equal(aligned.buffer, bytes.buffer);
  const shifted = new Uint8Array(bytes.byteLength + 1);
  shifted.set(bytes, 1);
  const unaligned = parseSafetensors(shifted.subarray(1), 'unaligned').float32('w');
  assert.notEqual(unaligned.buffer, shifted.buffer);
  assert.deepEqual([...unaligned], [1, 2, 3]);
});

test('safetensors - the writer refuses data that does not match its shape, and non-string metadata', () => {
  const bad = new Map<string, TensorToWrite>([['w', { dtype: 'F32', shape: [2, 2], data: new Float32Array(3) }]]);
  assert.throws(() => serializeSafetensors(bad, {}, 'out.safetensors'), /out\.safetensors: tensor w: 12 bytes of data for F32 shape \[2,2\], which needs 16/);
  assert.throws(() => serializeSafetensors(new Map(), { n: 3 as unknown as string }), /metadata "n" must be a string/);
});

test('safetensors - a tensor named __proto__ is an ordinary tensor and pollutes nothing', () => {
  const tensors = new Map<string, TensorToWrite>([['__proto__', { dtype: 'F32', shape: [1], data: Float32Array.from([4]) }]]);
  const file = parseSafetensors(concat(serializeSafetensors(tensors, { __proto__: 'x' } as unknown as Record<string, string>)), 'proto');
  assert.deepEqual([...file.float32('__proto__')], [4]);
  const hostile = fileFrom('{"__proto__":{"polluted":"yes"},"__metadata__":{"__proto__":"yes","constructor":"c"}}', []);
  assert.throws(() => parseSafetensors(hostile, 'hostile'), /tensor "__proto__" has an unknown field "polluted"/);
  const metadataOnly = parseSafetensors(fileFrom('{"__metadata__":{"__proto__":"yes","constructor":"c"}}', []), 'metadata');
  assert.equal(metadataOnly.metadata.get('__proto__'), 'yes');
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
});

test('safetensors - every malformed file is refused naming the file and the problem', () => {
  const entry = (name: string, dtype: string, shape: string, begin: number, end: number): string =>
    `"${name}":{"dtype":"${dtype}","shape":${shape},"data_offsets":[${begin},${end}]}`;
  expectFormatError(new Uint8Array(5), /5 bytes is shorter than the 8-byte header length/, 'truncated');
  expectFormatError(fileFrom('{}', [], 4000), /header length 4000 runs past the end of the 10-byte file/, 'truncated');
  const huge = new Uint8Array(16);
  new DataView(huge.buffer).setBigUint64(0, 2n ** 63n, true);
  expectFormatError(huge, /header length 9223372036854775808 exceeds the format's limit of 100000000 bytes/);
  expectFormatError(fileFrom('  {}', []), /must start with '\{'/);
  expectFormatError(fileFrom('{"a": nope}', []), /the header is not JSON/);
  expectFormatError(fileFrom('{\xff}', []), /not JSON|not valid UTF-8/);
  const invalidUtf8 = fileFrom('{"a":1}', []);
  invalidUtf8[10] = 0xff;
  expectFormatError(invalidUtf8, /not valid UTF-8/);
  expectFormatError(fileFrom('[]', []), /must start with '\{'/);
  expectFormatError(fileFrom(`{${entry('a', 'F31', '[1]', 0, 4)}}`, [0, 0, 0, 0]), /tensor "a" has unknown dtype "F31"/);
  expectFormatError(fileFrom(`{${entry('a', 'F32', '[-1]', 0, 4)}}`, [0, 0, 0, 0]), /shape that is not a list of non-negative integers/);
  expectFormatError(fileFrom(`{${entry('a', 'F32', '[1.5]', 0, 4)}}`, [0, 0, 0, 0]), /shape that is not a list/);
  expectFormatError(fileFrom(`{${entry('a', 'F32', '[2]', 0, 4)}}`, [0, 0, 0, 0]), /F32 shape \[2\] needs 8 bytes but data_offsets \[0, 4\) span 4/);
  expectFormatError(fileFrom(`{${entry('a', 'F32', '[1]', 4, 0)}}`, [0, 0, 0, 0]), /data_offsets that are not \[begin, end\]/);
  expectFormatError(fileFrom(`{${entry('a', 'F32', '[1]', 0, 4)}}`, [0, 0]), /tensor a ends at byte 4 of a 2-byte data buffer/, 'truncated');
  expectFormatError(fileFrom(`{${entry('a', 'F32', '[1]', 0, 4)}}`, [0, 0, 0, 0, 9]), /the tensors cover 4 bytes but the data buffer has 5/);
  expectFormatError(fileFrom(`{${entry('a', 'F32', '[1]', 4, 8)}}`, [0, 0, 0, 0, 0, 0, 0, 0]), /a gap before tensor a: bytes \[0, 4\) belong to no tensor/);
  expectFormatError(
    fileFrom(`{${entry('a', 'F32', '[2]', 0, 8)},${entry('b', 'F32', '[1]', 4, 8)}}`, new Array<number>(8).fill(0)),
    /tensor b at bytes \[4, 8\) overlaps the tensor before it/,
  );
  expectFormatError(
    fileFrom(`{${entry('a', 'F32', '[1]', 0, 4)},${entry('a', 'F32', '[1]', 4, 8)}}`, new Array<number>(8).fill(0)),
    /the header names "a" twice/,
  );
  expectFormatError(fileFrom('{"__metadata__":{"k":1}}', []), /__metadata__ "k" is number, not a string/);
  expectFormatError(fileFrom('{"__metadata__":[]}', []), /__metadata__ must be an object of strings/);
  expectFormatError(fileFrom('{"a":[1]}', []), /tensor "a" is not an object/);
  expectFormatError(fileFrom(`{${entry('a', 'F32', '[1e300,1e300]', 0, 4)}}`, [0, 0, 0, 0]), /shape that is not a list|needs/);
  assert.ok(MAX_HEADER_BYTES === 100_000_000);
});

test('safetensors - a duplicate key inside a nested value is not mistaken for a duplicate tensor', () => {
  const header = '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"__metadata__":{"a":"x, \\"a\\": {","b":"}"}}';
  const file = parseSafetensors(fileFrom(header, [0, 0, 0x80, 0x3f]), 'nested');
  assert.deepEqual([...file.float32('a')], [1]);
  assert.equal(file.metadata.get('a'), 'x, "a": {');
});

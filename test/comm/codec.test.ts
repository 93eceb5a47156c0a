// Tests: msgpackr envelope codec and WireTensor conversion (views, alignment, length checks).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeEnvelope, encodeEnvelope } from '../../src/comm/codec.ts';
import { PROTOCOL_VERSION, type Envelope } from '../../src/protocol/messages.ts';
import { fromWireTensor, shapeSize, toWireTensor } from '../../src/comm/tensor-wire.ts';

const heartbeat: Envelope = { kind: 'heartbeat', rank: 3, step: 7, state: 'training', rssMb: 512.5, v: PROTOCOL_VERSION, job: 'job-1' };

test('an envelope survives encode and decode', () => {
  assert.deepEqual(decodeEnvelope(encodeEnvelope(heartbeat)), heartbeat);
});

test('encoded bytes stay intact after later encodes share msgpackr buffer', () => {
  const first = encodeEnvelope(heartbeat);
  const copyOfFirst = first.slice();
  for (let i = 0; i < 100; i++) encodeEnvelope({ ...heartbeat, step: i, job: 'x'.repeat(i * 50) });
  assert.deepEqual(first, copyOfFirst);
  // The view is what matters: the underlying buffer holds other bytes as well.
  assert.ok(first.buffer.byteLength >= first.byteLength);
});

test('records are off: a decoder that never saw earlier messages decodes any later one', () => {
  const envelopes = Array.from({ length: 5 }, (_, i) => encodeEnvelope({ ...heartbeat, step: i }));
  // Decoding only the last proves there is no shared-structure state carried between messages.
  assert.equal((decodeEnvelope(envelopes[4]) as { step: number }).step, 4);
});

test('a tensor crosses encode/decode bit-exactly and decodes to an aligned zero-copy view', () => {
  const values = new Float32Array([1.5, -2, Number.MIN_VALUE, 3.4e38, NaN, -0]);
  const envelope: Envelope = {
    kind: 'collective', group: 'world', op: 'all-reduce', seq: 1, tag: '', from: 0, part: 0,
    tensor: toWireTensor(values, [2, 3]), v: PROTOCOL_VERSION, job: 'j',
  };
  const decoded = decodeEnvelope(encodeEnvelope(envelope)) as typeof envelope;
  const back = fromWireTensor(decoded.tensor);
  assert.ok(back instanceof Float32Array);
  assert.deepEqual(new Uint8Array(back.buffer, back.byteOffset, back.byteLength), new Uint8Array(values.buffer));
  assert.equal(back.buffer, decoded.tensor.data.buffer, 'aligned data is viewed, not copied');
});

test('int32 tensors keep their dtype and values', () => {
  const values = new Int32Array([0, -1, 2147483647, -2147483648]);
  const back = fromWireTensor(toWireTensor(values, [4]));
  assert.ok(back instanceof Int32Array);
  assert.deepEqual([...back], [...values]);
});

test('toWireTensor views the values without copying', () => {
  const values = new Float32Array(8).subarray(2, 6);
  const wire = toWireTensor(values, [4]);
  assert.equal(wire.data.buffer, values.buffer);
  assert.equal(wire.data.byteOffset, 8);
});

test('unaligned bytes are copied once into an aligned array', () => {
  const storage = new Uint8Array(1 + 8);
  storage.set(new Uint8Array(new Float32Array([7, 8]).buffer), 1);
  const back = fromWireTensor({ dtype: 'float32', shape: [2], data: storage.subarray(1) });
  assert.deepEqual([...back], [7, 8]);
  assert.notEqual(back.buffer, storage.buffer);
});

test('shape and length mismatches are refused with the numbers', () => {
  assert.throws(() => toWireTensor(new Float32Array(5), [2, 3]), /5 elements does not fit shape \[2, 3\]/);
  assert.throws(() => fromWireTensor({ dtype: 'float32', shape: [3], data: new Uint8Array(8) }), /needs 12 bytes, got 8/);
  assert.throws(() => shapeSize([2, -1]), /bad dimension -1 at axis 1/);
  assert.throws(() => shapeSize([1.5]), /bad dimension 1.5/);
  assert.throws(() => fromWireTensor({ dtype: 'float64' as 'float32', shape: [1], data: new Uint8Array(4) }), /dtype "float64"/);
  assert.equal(fromWireTensor({ dtype: 'int32', shape: [0, 5], data: new Uint8Array(0) }).length, 0);
});

test('a __proto__ key in a decoded map never becomes a prototype', () => {
  const bytes = encodeEnvelope(JSON.parse('{"kind":"fatal","__proto__":{"polluted":true},"v":1,"job":"j","rank":0,"reason":""}'));
  const decoded = decodeEnvelope(bytes) as Record<string, unknown>;
  assert.equal(Object.getPrototypeOf(decoded), Object.prototype);
  assert.equal((decoded as { polluted?: unknown }).polluted, undefined);
  assert.equal(({} as { polluted?: unknown }).polluted, undefined);
});

test('tensor-wire - bfloat16 halves the bytes, keeps float32\'s range, rounds to nearest even, keeps NaN', async () => {
  const { toWireTensor, fromWireTensor } = await import('../../src/comm/tensor-wire.ts');
  const { validateMessage } = await import('../../src/protocol/validate.ts');
  const { PROTOCOL_VERSION } = await import('../../src/protocol/messages.ts');
  // 1 + 2^-8 is halfway between two bfloat16 values: ties go to the even one (1); 1 + 3 * 2^-8 rounds up.
  const values = Float32Array.from([0, -2.5, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 3e38, 1e-30, Infinity, Number.NaN, 1 / 3]);
  const wire = toWireTensor(values, [values.length], { precision: 'bfloat16' });
  assert.equal(wire.dtype, 'bfloat16');
  assert.equal(wire.data.byteLength, 2 * values.length);
  const back = fromWireTensor(wire) as Float32Array;
  assert.deepEqual(Array.from(back.subarray(0, 4)), [0, -2.5, 1, 1 + 4 * 2 ** -8]);
  assert.ok(Math.abs(back[4] - 3e38) / 3e38 < 2 ** -8, 'float32\'s range: no overflow where float16 would');
  assert.ok(back[5] > 0 && Math.abs(back[5] - 1e-30) / 1e-30 < 2 ** -8, 'no underflow either');
  assert.equal(back[6], Infinity);
  assert.ok(Number.isNaN(back[7]));
  assert.ok(Math.abs(back[8] - 1 / 3) < 2 ** -9);
  const message = { v: PROTOCOL_VERSION, job: 'j', kind: 'collective', group: 'g', op: 'send', seq: 0, tag: 't', from: 0, part: 0, tensor: wire };
  assert.ok(validateMessage(message, 'j').ok, 'a bfloat16 tensor is a valid message');
  const short = { ...message, tensor: { ...wire, data: wire.data.subarray(2) } };
  assert.ok(!validateMessage(short, 'j').ok, 'a bfloat16 tensor missing bytes is refused');
});

test('bytes that are not one msgpack value throw', () => {
  assert.throws(() => decodeEnvelope(new Uint8Array([0x93, 0x01])));
  assert.throws(() => decodeEnvelope(new Uint8Array([1, 2, 3])));
});

test('tensor-wire - float16 halves the bytes and comes back as float32 within half precision', async () => {
  const { toWireTensor, fromWireTensor } = await import('../../src/comm/tensor-wire.ts');
  const values = Float32Array.from([0, 1, -2.5, 1 / 3, 65504, 70000, 1e-8]);
  const wire = toWireTensor(values, [7], { precision: 'float16' });
  assert.equal(wire.dtype, 'float16');
  assert.equal(wire.data.byteLength, 14);
  const back = fromWireTensor(wire) as Float32Array;
  assert.ok(back instanceof Float32Array);
  assert.deepEqual(Array.from(back.subarray(0, 3)), [0, 1, -2.5]);
  assert.ok(Math.abs(back[3] - 1 / 3) < 1e-3);
  assert.equal(back[4], 65504);
  assert.equal(back[5], Infinity, 'beyond the half range overflows, which the loss scaler detects');
  assert.equal(back[6], 0, 'underflow to zero, which loss scaling prevents');
});

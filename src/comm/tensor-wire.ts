/**
 * Implements: typed arrays to and from `WireTensor` (dtype, shape, little-endian bytes). Encoding is a view
 * (no copy); decoding is a zero-copy view when the bytes sit at a 4-aligned offset, else one copy.
 */
import { decodeBfloat16, decodeFloat16, encodeBfloat16, encodeFloat16 } from './float16.ts';
import type { WireDType, WireTensor } from '../protocol/messages.ts';

// Every host this runs on is little-endian; the wire format relies on it, so refuse to run otherwise.
const hostIsLittleEndian = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
if (!hostIsLittleEndian) {
  throw new Error('tensor-wire: this host is big-endian; the wire format assumes little-endian hosts');
}

export const WIRE_ELEMENT_BYTES = 4;

/** Product of a shape's dimensions, or an error naming the bad dimension. */
export function shapeSize(shape: readonly number[]): number {
  let size = 1;
  for (let i = 0; i < shape.length; i++) {
    const dim = shape[i];
    if (!Number.isSafeInteger(dim) || dim < 0) {
      throw new Error(`tensor shape [${shape.join(', ')}] has a bad dimension ${dim} at axis ${i}: use non-negative integers`);
    }
    size *= dim;
  }
  if (!Number.isSafeInteger(size)) throw new Error(`tensor shape [${shape.join(', ')}] has too many elements`);
  return size;
}

/** Bytes per element of a wire dtype. */
export function wireElementBytes(dtype: WireDType): number {
  return dtype === 'float16' || dtype === 'bfloat16' ? 2 : WIRE_ELEMENT_BYTES;
}

/** How float32 values travel: as they are, or as 2-byte IEEE halves or bfloat16 (the receiver gets float32 back). */
export type WirePrecision = 'float32' | 'float16' | 'bfloat16';

/** `precision`: float32 values travel as float32 (the default), IEEE halves or bfloat16 (half the bytes). */
export function toWireTensor(values: Float32Array | Int32Array, shape: readonly number[], options: { precision?: WirePrecision } = {}): WireTensor {
  const size = shapeSize(shape);
  if (size !== values.length) {
    throw new Error(`tensor of ${values.length} elements does not fit shape [${shape.join(', ')}] (${size} elements)`);
  }
  const precision = options.precision ?? 'float32';
  if (precision !== 'float32') {
    if (!(values instanceof Float32Array)) throw new Error(`only float32 tensors can travel as ${precision}`);
    const bits = precision === 'float16' ? encodeFloat16(values) : encodeBfloat16(values);
    return { dtype: precision, shape: [...shape], data: new Uint8Array(bits.buffer, bits.byteOffset, bits.byteLength) };
  }
  const dtype: WireDType = values instanceof Float32Array ? 'float32' : 'int32';
  return { dtype, shape: [...shape], data: new Uint8Array(values.buffer, values.byteOffset, values.byteLength) };
}

export function fromWireTensor(wire: WireTensor): Float32Array | Int32Array {
  const size = shapeSize(wire.shape);
  const bytes = size * wireElementBytes(wire.dtype);
  if (wire.data.byteLength !== bytes) {
    throw new Error(`wire tensor of shape [${wire.shape.join(', ')}] needs ${bytes} bytes, got ${wire.data.byteLength}`);
  }
  if (wire.dtype === 'float16' || wire.dtype === 'bfloat16') {
    const aligned = wire.data.byteOffset % 2 === 0 ? wire.data : wire.data.slice();
    const bits = new Uint16Array(aligned.buffer as ArrayBuffer, aligned.byteOffset, size);
    return wire.dtype === 'float16' ? decodeFloat16(bits) : decodeBfloat16(bits);
  }
  const View = wire.dtype === 'float32' ? Float32Array : wire.dtype === 'int32' ? Int32Array : undefined;
  if (View === undefined) throw new Error(`wire tensor dtype ${JSON.stringify(wire.dtype)} is not float32 or int32`);
  if (wire.data.byteOffset % WIRE_ELEMENT_BYTES === 0) return new View(wire.data.buffer as ArrayBuffer, wire.data.byteOffset, size);
  return new View(wire.data.slice().buffer, 0, size);
}

/** The precision of a run's activations on the wire: comm.wirePrecision, float16 in fp16 mode unless bfloat16 is asked for. */
export function wirePrecisionOf(config: { comm: { wirePrecision: WirePrecision }; fp16?: unknown }): WirePrecision {
  return config.comm.wirePrecision === 'float32' && config.fp16 !== undefined ? 'float16' : config.comm.wirePrecision;
}

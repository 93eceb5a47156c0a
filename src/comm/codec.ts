/**
 * Implements: the byte encoding of envelopes with msgpackr. Records (shared structures) stay off because
 * the bus is at-most-once: a record definition lost with one message would corrupt every later one.
 * `moreTypes` makes typed arrays round-trip as aligned copies. Decoding is raw: protocol/validate.ts checks shape.
 */
import { Packr, RESERVE_START_SPACE } from 'msgpackr';
import type { Envelope } from '../protocol/messages.ts';

const packr = new Packr({ useRecords: false, moreTypes: true });

/**
 * The returned bytes are a view into a buffer msgpackr shares between calls (later calls write after it,
 * never over it): use the view (or copy it), never its `.buffer`. `room` bytes (at most 255, content
 * unspecified) come before the encoding, for a header written in place rather than by copying the message.
 */
export function encodeEnvelope(envelope: Envelope, room = 0): Uint8Array {
  if (!Number.isInteger(room) || room < 0 || room > 0xff) throw new Error(`room before an encoded envelope must be 0 to 255 bytes, got ${room}`);
  return room === 0 ? packr.pack(envelope) : packr.pack(envelope, RESERVE_START_SPACE | room);
}

/** Any value in the same encoding (the data plane's handshake, which is no envelope). */
export function encodeValue(value: unknown): Uint8Array {
  return packr.pack(value);
}

/** Throws on bytes that are not one complete msgpack value. */
export function decodeEnvelope(bytes: Uint8Array): unknown {
  return packr.unpack(bytes);
}

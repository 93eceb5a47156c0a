/**
 * Implements: the byte encoding of envelopes with msgpackr. Records (shared structures) stay off because
 * the bus is at-most-once: a record definition lost with one message would corrupt every later one.
 * `moreTypes` makes typed arrays round-trip as aligned copies. Decoding is raw: validate.ts checks shape.
 */
import { Packr } from 'msgpackr';
import type { Envelope } from './messages.ts';

const packr = new Packr({ useRecords: false, moreTypes: true });

/**
 * The returned bytes are a view into a buffer msgpackr shares between calls: use the view (or copy it),
 * never its `.buffer`.
 */
export function encodeEnvelope(envelope: Envelope): Uint8Array {
  return packr.pack(envelope);
}

/** Throws on bytes that are not one complete msgpack value. */
export function decodeEnvelope(bytes: Uint8Array): unknown {
  return packr.unpack(bytes);
}

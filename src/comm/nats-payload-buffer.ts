/**
 * Implements: one right-sized, reusable buffer per large incoming NATS message instead of the client's
 * doubling one. The client's parser (@nats-io/nats-core 3.4) collects a message that spans socket reads
 * (every message above the socket's 64 KB reads) in a buffer that starts at the first read's size and
 * doubles, copying what it holds each time: for a 4 MB message about 16 MB of zero-filled allocations
 * and 8 MB of copies, whose garbage collection cost the receiver more than all the rest of its work
 * (measured in the transport bench's profile). Once a message's size is known (its MSG line is parsed),
 * this moves what arrived so far into one buffer of at least that size, uninitialized (the parser
 * delivers only bytes it has written), and the parser fills the rest without growing. A delivered
 * message's buffer that its reader hands back (`recyclePayload`) takes the next large message.
 *
 * The server refuses publishes above its max_payload, and the parser sizes above 64 MB, so a declared
 * size never makes this reserve more than the server lets through.
 *
 * This reaches into the parser's fields, which the client exports but does not promise; when they are
 * not what this expects (another client version), it changes nothing, and `payloadBufferActive` says so
 * (a test checks it, so an upgrade that defeats it is noticed).
 */
import { DenoBuffer, Parser, State } from '@nats-io/transport-node';

const INSTALLED = Symbol.for('gpt-hybrid.nats-payload-buffer');

/** Buffers this module allocated: the only memory `recyclePayload` takes back. */
const own = new WeakSet<ArrayBufferLike>();
/** A delivered message's buffer, handed back, for the next large message that fits in it. */
let spare: ArrayBuffer | undefined;

export const payloadBufferStats = {
  /** Messages collected in a right-sized buffer, and how many of those reused a handed-back one. */
  presized: 0,
  reused: 0,
};

let active = false;

/** Whether the client's parser has the fields this relies on (known once installed). */
export function payloadBufferActive(): boolean {
  return active;
}

/** Patches the client's parser once per process; every connection, reconnected ones included, uses it. */
export function installPayloadBuffer(): void {
  const prototype = Parser.prototype as Parser & { [INSTALLED]?: true };
  if (prototype[INSTALLED] === true) return;
  prototype[INSTALLED] = true;
  const probe = new DenoBuffer(new ArrayBuffer(8));
  probe.truncate(0);
  active = typeof prototype.parse === 'function' && typeof State.MSG_PAYLOAD === 'number' && probe.capacity === 8 && probe.length === 0;
  if (!active) return;
  const parse = prototype.parse;
  prototype.parse = function parseIntoOneBuffer(this: Parser, buf: Uint8Array): void {
    parse.call(this, buf);
    const pending = this.msgBuf;
    if (this.state !== State.MSG_PAYLOAD || pending === undefined) return;
    const size = this.ma?.size;
    if (typeof size !== 'number' || !(size > pending.capacity)) return;
    const arrived = pending.bytes({ copy: false });
    const memory = takeSpare(size) ?? allocate(size);
    new Uint8Array(memory).set(arrived);
    // Over an ArrayBuffer the parser's buffer keeps it (a Uint8Array would be copied); its length is what was written.
    const sized = new DenoBuffer(memory);
    sized.truncate(arrived.byteLength);
    this.msgBuf = sized;
    payloadBufferStats.presized++;
  };
}

/**
 * Hands back the data of a delivered message once nothing refers to it (its decoded values included):
 * the next large message is collected in the same memory. Data this module did not allocate is ignored.
 */
export function recyclePayload(data: Uint8Array): void {
  const memory = data.buffer;
  if (!own.has(memory) || !(memory instanceof ArrayBuffer)) return;
  if (spare === undefined || spare.byteLength < memory.byteLength) spare = memory;
}

function allocate(size: number): ArrayBuffer {
  const bytes = Buffer.allocUnsafeSlow(size);
  // allocUnsafeSlow never hands out a slice of a shared pool: the ArrayBuffer is this message's alone.
  const memory = bytes.buffer as ArrayBuffer;
  own.add(memory);
  return memory;
}

/** The spare when it fits and is not more than twice the size: a message whose reader keeps it must not pin far more memory. */
function takeSpare(size: number): ArrayBuffer | undefined {
  if (spare === undefined || spare.byteLength < size || spare.byteLength > 2 * size) return undefined;
  const memory = spare;
  spare = undefined;
  payloadBufferStats.reused++;
  return memory;
}

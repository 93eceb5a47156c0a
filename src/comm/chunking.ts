/**
 * Implements: splitting payloads larger than the transport's max_payload into chunks, and reassembling
 * them on the receiving side. Every payload travels in a frame whose first byte says whole (0) or chunk
 * (1); a chunk frame carries a fixed little-endian header:
 *
 *   offset 0  u8   frame type (1)
 *   offset 1  u32  sender id, high half    } random per sender: message ids of two
 *   offset 5  u32  sender id, low half     } processes never collide
 *   offset 9  u32  message counter (per sender)
 *   offset 13 u32  chunk index (0-based)
 *   offset 17 u32  chunk count
 *   offset 21 u32  total message bytes
 *   offset 25      chunk bytes
 *
 * NATS delivers one publisher's messages on one subject in order, so the reassembler insists on the
 * exact index sequence: a lost, repeated or reordered chunk drops the whole message (counted), never
 * yields wrong bytes. Incomplete messages are dropped after a timeout, and totals above a bound are
 * refused before any memory is spent on them. A first chunk must be able to make its declared total
 * (count chunks of its own size), and the declared bytes of all incomplete messages of a subscription are
 * capped: a few forged headers cannot make a receiver reserve gigabytes.
 *
 * A completed message's buffer may be handed back (`recycle`) once nothing refers to it, and the next
 * message is assembled into it: a fresh multi-megabyte buffer per message cost more in page faults and
 * garbage collection than the copy into it (measured: 26% of the bus' CPU per 40 MB message).
 */
import { randomBytes } from 'node:crypto';

export const FRAME_WHOLE = 0;
export const FRAME_CHUNK = 1;
export const WHOLE_HEADER_BYTES = 1;
export const CHUNK_HEADER_BYTES = 25;
export const DEFAULT_MAX_MESSAGE_BYTES = 512 * 1024 * 1024;
export const DEFAULT_CHUNK_TIMEOUT_MS = 30_000;
const MAX_U32 = 0xffff_ffff;
/** A recycled buffer above this is let go rather than held for the subscription's lifetime. */
const MAX_RECYCLED_BYTES = 64 * 1024 * 1024;

export interface ChunkHeader {
  senderHigh: number;
  senderLow: number;
  counter: number;
  index: number;
  count: number;
  totalBytes: number;
}

export type Frame =
  | { type: 'whole'; bytes: Uint8Array }
  | { type: 'chunk'; header: ChunkHeader; bytes: Uint8Array }
  | { type: 'bad'; detail: string };

/** Cuts messages into frames that each fit `maxPayload`. One per sending bus. */
export class Chunker {
  private readonly senderHigh: number;
  private readonly senderLow: number;
  private counter = 0;

  constructor(readonly maxPayload: number) {
    if (!Number.isSafeInteger(maxPayload) || maxPayload <= CHUNK_HEADER_BYTES) {
      throw new Error(`max_payload ${maxPayload} is too small: chunk frames need more than ${CHUNK_HEADER_BYTES} bytes`);
    }
    const id = randomBytes(8);
    this.senderHigh = id.readUInt32LE(0);
    this.senderLow = id.readUInt32LE(4);
  }

  /** Whether `bytes` travels as one whole frame. */
  fitsWhole(byteLength: number): boolean {
    return byteLength + WHOLE_HEADER_BYTES <= this.maxPayload;
  }

  wholeFrame(bytes: Uint8Array): Uint8Array {
    const frame = uninitializedBytes(WHOLE_HEADER_BYTES + bytes.byteLength);
    frame[0] = FRAME_WHOLE;
    frame.set(bytes, WHOLE_HEADER_BYTES);
    return frame;
  }

  /**
   * `frames` of a message encoded after WHOLE_HEADER_BYTES of room: one that travels whole is framed in
   * that room, without copying it (the copy cost as much as encoding a tensor).
   */
  framesInPlace(roomAndBytes: Uint8Array): Uint8Array[] {
    const bytes = roomAndBytes.subarray(WHOLE_HEADER_BYTES);
    if (!this.fitsWhole(bytes.byteLength)) return this.frames(bytes);
    roomAndBytes[0] = FRAME_WHOLE;
    return [roomAndBytes];
  }

  /** One whole frame when it fits, else chunk frames in index order. */
  frames(bytes: Uint8Array): Uint8Array[] {
    if (this.fitsWhole(bytes.byteLength)) return [this.wholeFrame(bytes)];
    if (bytes.byteLength > MAX_U32) throw new Error(`message of ${bytes.byteLength} bytes is above the 4 GiB frame limit`);
    const chunkBytes = this.maxPayload - CHUNK_HEADER_BYTES;
    const count = Math.ceil(bytes.byteLength / chunkBytes);
    const counter = this.counter;
    this.counter = (this.counter + 1) >>> 0;
    const frames: Uint8Array[] = [];
    for (let index = 0; index < count; index++) {
      const part = bytes.subarray(index * chunkBytes, Math.min(bytes.byteLength, (index + 1) * chunkBytes));
      const frame = uninitializedBytes(CHUNK_HEADER_BYTES + part.byteLength);
      const header = new DataView(frame.buffer, frame.byteOffset, CHUNK_HEADER_BYTES);
      header.setUint8(0, FRAME_CHUNK);
      header.setUint32(1, this.senderHigh, true);
      header.setUint32(5, this.senderLow, true);
      header.setUint32(9, counter, true);
      header.setUint32(13, index, true);
      header.setUint32(17, count, true);
      header.setUint32(21, bytes.byteLength, true);
      frame.set(part, CHUNK_HEADER_BYTES);
      frames.push(frame);
    }
    return frames;
  }
}

/**
 * A plain Uint8Array over memory that is not zero-filled (Buffer.allocUnsafe): callers write every byte
 * before anyone reads it. Zero-filling megabyte frames cost as much as copying them.
 */
function uninitializedBytes(length: number): Uint8Array {
  const buffer = Buffer.allocUnsafe(length);
  return new Uint8Array(buffer.buffer, buffer.byteOffset, length);
}

export function parseFrame(data: Uint8Array): Frame {
  if (data.byteLength < 1) return { type: 'bad', detail: 'empty payload' };
  if (data[0] === FRAME_WHOLE) return { type: 'whole', bytes: data.subarray(WHOLE_HEADER_BYTES) };
  if (data[0] !== FRAME_CHUNK) return { type: 'bad', detail: `unknown frame type ${data[0]}` };
  if (data.byteLength < CHUNK_HEADER_BYTES) {
    return { type: 'bad', detail: `chunk frame of ${data.byteLength} bytes is shorter than its ${CHUNK_HEADER_BYTES}-byte header` };
  }
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  return {
    type: 'chunk',
    header: {
      senderHigh: view.getUint32(1, true),
      senderLow: view.getUint32(5, true),
      counter: view.getUint32(9, true),
      index: view.getUint32(13, true),
      count: view.getUint32(17, true),
      totalBytes: view.getUint32(21, true),
    },
    bytes: data.subarray(CHUNK_HEADER_BYTES),
  };
}

export interface ReassemblerOptions {
  maxMessageBytes?: number;
  /** Cap on the declared bytes of all incomplete messages together; default 4 x maxMessageBytes. */
  maxPendingBytes?: number;
  /**
   * Cap on one sender's incomplete messages (a sender is a bus; its id is under the job key's signature):
   * default maxMessageBytes, so one sender's stalled or fake messages leave room for the others'.
   */
  maxSenderPendingBytes?: number;
  timeoutMs?: number;
  /** Told about every dropped message, once per message. */
  onDrop?: (reason: 'chunk' | 'oversized', detail: string) => void;
  now?: () => number;
}

export type AcceptResult =
  | { status: 'complete'; bytes: Uint8Array }
  | { status: 'pending' }
  | { status: 'dropped'; reason: 'chunk' | 'oversized'; detail: string };

interface PartialMessage {
  count: number;
  totalBytes: number;
  nextIndex: number;
  receivedBytes: number;
  /** Uninitialized until written; delivered only once every byte of it has been written in order. */
  whole: Uint8Array;
  lastArrival: number;
}

/** Reassembles the chunked messages of one subscription. */
export class Reassembler {
  readonly maxMessageBytes: number;
  readonly maxPendingBytes: number;
  readonly maxSenderPendingBytes: number;
  readonly timeoutMs: number;
  /** Declared bytes of each sender's incomplete messages. */
  private readonly reservedBySender = new Map<string, number>();
  private readonly partials = new Map<string, PartialMessage>();
  /** Sum of the incomplete messages' declared totals (what their buffers reserve). */
  private reservedBytes = 0;
  /** Messages already dropped: their later chunks are discarded without counting the message again. */
  private readonly dropped = new Map<string, number>();
  private readonly onDrop: ReassemblerOptions['onDrop'];
  /** A completed message's buffer, handed back by `recycle`, for the next message that fits in it. */
  private spare: Uint8Array | undefined;
  /** Memory this reassembler allocated itself: the only memory it takes back. */
  private readonly own = new WeakSet<ArrayBufferLike>();
  private readonly now: () => number;
  private sweepTimer: NodeJS.Timeout | undefined;
  completed = 0;
  droppedMessages = 0;

  constructor(options: ReassemblerOptions = {}) {
    this.maxMessageBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    this.maxPendingBytes = options.maxPendingBytes ?? 4 * this.maxMessageBytes;
    this.maxSenderPendingBytes = options.maxSenderPendingBytes ?? this.maxMessageBytes;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_CHUNK_TIMEOUT_MS;
    this.onDrop = options.onDrop;
    this.now = options.now ?? Date.now;
  }

  /** Bytes held by incomplete messages. */
  get pendingBytes(): number {
    let sum = 0;
    for (const partial of this.partials.values()) sum += partial.receivedBytes;
    return sum;
  }

  get pendingMessages(): number {
    return this.partials.size;
  }

  accept(header: ChunkHeader, bytes: Uint8Array): AcceptResult {
    const key = `${header.senderHigh}:${header.senderLow}:${header.counter}`;
    const now = this.now();
    if (this.dropped.has(key)) return { status: 'pending' };
    if (header.count === 0 || header.index >= header.count) {
      return this.drop(key, 'chunk', `chunk ${header.index} of ${header.count} of message ${key} is out of range`);
    }
    if (header.totalBytes > this.maxMessageBytes) {
      return this.drop(key, 'oversized', `message ${key} of ${header.totalBytes} bytes is above maxMessageBytes ${this.maxMessageBytes}`);
    }
    let partial = this.partials.get(key);
    if (partial === undefined) {
      if (header.index !== 0) {
        return this.drop(key, 'chunk', `chunk ${header.index}/${header.count} of message ${key} arrived without its earlier chunks`);
      }
      // The sender cuts equal chunks and a shorter last one: the first chunk's size fixes what the count can hold.
      if (header.count * bytes.byteLength < header.totalBytes || (header.count - 1) * bytes.byteLength >= header.totalBytes) {
        return this.drop(key, 'chunk', `message ${key}: ${header.count} chunks of ${bytes.byteLength} bytes cannot make the announced ${header.totalBytes} bytes`);
      }
      const sender = senderOf(key);
      const senderReserved = this.reservedBySender.get(sender) ?? 0;
      if (senderReserved + header.totalBytes > this.maxSenderPendingBytes) {
        return this.drop(
          key,
          'oversized',
          `message ${key} of ${header.totalBytes} bytes would bring sender ${sender}'s incomplete messages to ${senderReserved + header.totalBytes} bytes, above maxSenderPendingBytes ${this.maxSenderPendingBytes}`,
        );
      }
      if (this.reservedBytes + header.totalBytes > this.maxPendingBytes) {
        return this.drop(
          key,
          'oversized',
          `message ${key} of ${header.totalBytes} bytes would bring incomplete messages to ${this.reservedBytes + header.totalBytes} bytes, above maxPendingBytes ${this.maxPendingBytes}`,
        );
      }
      partial = {
        count: header.count,
        totalBytes: header.totalBytes,
        nextIndex: 0,
        receivedBytes: 0,
        whole: this.takeSpare(header.totalBytes) ?? this.allocate(header.totalBytes),
        lastArrival: now,
      };
      this.partials.set(key, partial);
      this.reservedBytes += partial.totalBytes;
      this.reservedBySender.set(sender, senderReserved + partial.totalBytes);
      this.scheduleSweep();
    }
    if (header.index !== partial.nextIndex || header.count !== partial.count || header.totalBytes !== partial.totalBytes) {
      return this.drop(
        key,
        'chunk',
        `message ${key}: expected chunk ${partial.nextIndex}/${partial.count} of ${partial.totalBytes} bytes, ` +
          `got chunk ${header.index}/${header.count} of ${header.totalBytes} bytes`,
      );
    }
    if (partial.receivedBytes + bytes.byteLength > partial.totalBytes) {
      return this.drop(key, 'chunk', `message ${key}: chunks carry more than the announced ${partial.totalBytes} bytes`);
    }
    // Copied out now: the frame may be a view into a buffer the transport reuses.
    partial.whole.set(bytes, partial.receivedBytes);
    partial.receivedBytes += bytes.byteLength;
    partial.nextIndex++;
    partial.lastArrival = now;
    if (partial.nextIndex < partial.count) return { status: 'pending' };
    this.forget(key);
    if (partial.receivedBytes !== partial.totalBytes) {
      return this.drop(key, 'chunk', `message ${key}: chunks carry ${partial.receivedBytes} bytes, announced ${partial.totalBytes}`);
    }
    this.completed++;
    return { status: 'complete', bytes: partial.whole };
  }

  /**
   * Hands back the bytes of a message this reassembler completed, once the caller holds no view into
   * them (decoded values that alias them included): the next message is assembled into the same memory.
   */
  recycle(bytes: Uint8Array): void {
    if (!this.own.has(bytes.buffer) || bytes.buffer.byteLength > MAX_RECYCLED_BYTES) return;
    this.spare = new Uint8Array(bytes.buffer);
  }

  /** Uninitialized (every byte is written before delivery) and never a slice of a shared pool. */
  private allocate(length: number): Uint8Array {
    const buffer = Buffer.allocUnsafeSlow(length);
    this.own.add(buffer.buffer);
    return new Uint8Array(buffer.buffer, buffer.byteOffset, length);
  }

  private takeSpare(length: number): Uint8Array | undefined {
    const spare = this.spare;
    if (spare === undefined || spare.byteLength < length) return undefined;
    this.spare = undefined;
    return spare.subarray(0, length);
  }

  /** Drops messages whose last chunk arrived more than `timeoutMs` ago; returns how many. */
  sweep(now = this.now()): number {
    let expired = 0;
    for (const [key, partial] of this.partials) {
      if (now - partial.lastArrival >= this.timeoutMs) {
        expired++;
        this.drop(key, 'chunk', `message ${key} incomplete after ${this.timeoutMs} ms: got ${partial.nextIndex} of ${partial.count} chunks`);
      }
    }
    for (const [key, at] of this.dropped) if (now - at >= this.timeoutMs) this.dropped.delete(key);
    if (this.partials.size === 0 && this.dropped.size === 0) this.stopSweep();
    return expired;
  }

  dispose(): void {
    this.spare = undefined;
    this.partials.clear();
    this.reservedBytes = 0;
    this.dropped.clear();
    this.stopSweep();
  }

  private forget(key: string): void {
    const partial = this.partials.get(key);
    if (partial === undefined) return;
    this.partials.delete(key);
    this.reservedBytes -= partial.totalBytes;
    const sender = senderOf(key);
    const left = (this.reservedBySender.get(sender) ?? 0) - partial.totalBytes;
    if (left > 0) this.reservedBySender.set(sender, left);
    else this.reservedBySender.delete(sender);
  }

  private drop(key: string, reason: 'chunk' | 'oversized', detail: string): AcceptResult {
    this.forget(key);
    this.dropped.set(key, this.now());
    this.droppedMessages++;
    this.scheduleSweep();
    this.onDrop?.(reason, detail);
    return { status: 'dropped', reason, detail };
  }

  private scheduleSweep(): void {
    if (this.sweepTimer !== undefined) return;
    this.sweepTimer = setInterval(() => this.sweep(), Math.max(10, Math.min(1000, this.timeoutMs / 4)));
    this.sweepTimer.unref();
  }

  private stopSweep(): void {
    if (this.sweepTimer !== undefined) clearInterval(this.sweepTimer);
    this.sweepTimer = undefined;
  }
}

/** The sending bus of a message key (`senderHigh:senderLow:counter`). */
function senderOf(key: string): string {
  return key.slice(0, key.lastIndexOf(':'));
}

/**
 * Implements: the direct data plane of one rank: TCP connections to the other ranks of the job that
 * carry the pieces of collectives and point-to-point sends (tensors), while NATS keeps every other
 * message (NCCL's and Gloo's split: a rendezvous service for discovery and control, direct links for
 * bytes). Measured on two cores (bench transport): tensors through the broker cost three processes CPU
 * per megabyte (sender, server, receiver) and reached 0.26-0.70 GB/s against 1.0-2.1 GB/s on raw TCP.
 *
 * [Note: data plane links] Each rank listens on one address of its own (announced on the job's
 * `dataplane.addr.<rank>` subject) and dials every peer it sends to: one connection a direction, so two
 * ranks never race to dial each other. The listener sends a random challenge; the dialer answers with
 * HMAC-SHA256(data plane key, challenge | job | from | to), the key being derived from the job's key by
 * every launcher (launcher/data-plane-setup.ts) and handed to its ranks (environment, never argv); the listener confirms, and only then does the dialer send. Anything else (a wrong proof, another job, garbage, a frame
 * before the proof) closes the connection and is counted. After the proof, frames carry messages in the
 * bus' own encoding (msgpackr envelopes, checked by protocol/validate.ts like any bus message) with the
 * subject they are for, a tensor's bytes out of band after its envelope, at a 4-aligned offset: the
 * sender copies them once into the frame, the receiver once out of the socket's chunks (a raw TCP
 * stream's own cost), and the values are a view of that. Measured (bench transport, 4 MB tensors, two
 * cores): bytes inside the msgpackr envelope reached 0.73 of raw TCP; out of band, from send buffers reused once written, 1.05-1.20. A rank that ends says goodbye on
 * every connection first, so a peer can tell a clean end from a broken link; a broken link is reported
 * (`onBroken`) and the job rolls back as it does for a dropped NATS connection.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { connect, createServer, type Server, type Socket } from 'node:net';
import type { Bus } from './bus.ts';
import { validateMessage } from '../protocol/validate.ts';
import { decodeEnvelope, encodeEnvelope, encodeValue } from './codec.ts';
import { PROTOCOL_VERSION, type Envelope, type Message } from '../protocol/messages.ts';
import { DEFAULT_MAX_MESSAGE_BYTES } from './chunking.ts';
import type { Subscription } from './transport.ts';
import { requestUntil } from './request-until.ts';

/** Bytes of a job key (HMAC-SHA256's own size). */
export const DATA_PLANE_KEY_BYTES = 32;
const CHALLENGE_BYTES = 32;
/** How long a dialer has to prove itself, and a dial to complete. */
const HANDSHAKE_TIMEOUT_MS = 10_000;
/** A TCP keep-alive probe after this long idle: a peer whose machine vanished is noticed. */
const KEEP_ALIVE_MS = 10_000;
/** How long a rank waits for a peer to announce its address before sending through NATS instead. */
const ADDRESS_TIMEOUT_MS = 30_000;

const FRAME = { message: 0, challenge: 1, proof: 2, goodbye: 3, accepted: 4 } as const;
/** u32 length of what follows (type byte included), u8 type. */
const FRAME_HEADER_BYTES = 5;
const MAX_SUBJECT_BYTES = 200;
/** Frames below this are allocated fresh (cheap); larger ones are reused, at most this many kept. */
const RECYCLE_MIN_BYTES = 64 * 1024;
const MAX_SPARE_BUFFERS = 16;

export interface DataPlaneAddress {
  host: string;
  port: number;
}

export interface DataPlaneOptions {
  bus: Bus;
  jobId: string;
  rank: number;
  /** The data plane's key (DATA_PLANE_KEY_BYTES, derived from the job's key) every rank of the job holds. */
  key: Uint8Array;
  /** The address to listen on and announce: an interface the other ranks reach. */
  host: string;
  log: (line: string) => void;
  /** A link to `peer` broke while neither side was ending: messages on it may be lost. */
  onBroken?: (peer: number, reason: string) => void;
  maxMessageBytes?: number;
}

export interface DataPlaneStats {
  sent: number;
  received: number;
  /** Connections refused (bad proof, another job, garbage) and messages that failed validation. */
  rejected: number;
}

type Handler = (message: Message) => void;

/** A connection this rank dialed, to send on. */
interface OutgoingLink {
  /** The socket once the listener accepted this rank's proof; rejects when the peer cannot be reached. */
  dialed: Promise<Socket>;
  /** That socket while it carries messages: undefined before the proof and after a break. */
  open: Socket | undefined;
}

/** Frames of one socket, as they complete. */
class FrameReader {
  private chunks: Buffer[] = [];
  private buffered = 0;

  constructor(
    private readonly maxFrameBytes: number,
    private readonly onFrame: (type: number, body: Buffer) => void,
    private readonly onError: (reason: string) => void,
    private readonly allocate: (bytes: number) => Buffer = Buffer.allocUnsafe,
  ) {}

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.buffered += chunk.byteLength;
    for (;;) {
      if (this.buffered < FRAME_HEADER_BYTES) return;
      const head = this.peek(FRAME_HEADER_BYTES);
      const length = head.readUInt32LE(0);
      if (length < 1 || length - 1 > this.maxFrameBytes) return this.onError(`a frame of ${length} bytes (at most ${this.maxFrameBytes + 1})`);
      if (this.buffered < 4 + length) return;
      const frame = this.take(4 + length);
      this.onFrame(frame[4]!, frame.subarray(FRAME_HEADER_BYTES));
    }
  }

  /** The first `n` buffered bytes, joined only when they span chunks. */
  private peek(n: number): Buffer {
    if (this.chunks[0]!.byteLength >= n) return this.chunks[0]!;
    return Buffer.concat(this.chunks).subarray(0, n);
  }

  /** Removes and returns the first `n` bytes: a view when one chunk holds them (the common case), else one copy. */
  private take(n: number): Buffer {
    const first = this.chunks[0]!;
    let frame: Buffer;
    if (first.byteLength >= n) {
      frame = first.subarray(0, n);
      if (first.byteLength === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      frame = this.allocate(n);
      let filled = 0;
      while (filled < n) {
        const chunk = this.chunks[0]!;
        const part = Math.min(chunk.byteLength, n - filled);
        chunk.copy(frame, filled, 0, part);
        filled += part;
        if (part === chunk.byteLength) this.chunks.shift();
        else this.chunks[0] = chunk.subarray(part);
      }
    }
    this.buffered -= n;
    return frame;
  }
}

/**
 * Frame buffers used again once done with: fresh pages cost more than the copy into them (first touch,
 * and the collector's time), so a tensor-sized buffer serves step after step.
 */
class BufferPool {
  private readonly spare: Buffer[] = [];

  /** A buffer of at least `bytes` (at most twice that); small ones come fresh from Node's pool. */
  take(bytes: number): Buffer {
    if (bytes < RECYCLE_MIN_BYTES) return Buffer.allocUnsafe(bytes);
    const index = this.spare.findIndex((buffer) => buffer.byteLength >= bytes && buffer.byteLength <= 2 * bytes);
    return index >= 0 ? this.spare.splice(index, 1)[0]! : Buffer.allocUnsafeSlow(bytes);
  }

  give(buffer: Buffer): void {
    if (buffer.byteLength < RECYCLE_MIN_BYTES) return;
    this.spare.push(buffer);
    // The oldest go: what a step sends changes little, so a few of each size are enough.
    if (this.spare.length > MAX_SPARE_BUFFERS) this.spare.shift();
  }
}

function frameOf(type: number, body: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(FRAME_HEADER_BYTES + body.byteLength);
  frame.writeUInt32LE(1 + body.byteLength, 0);
  frame[4] = type;
  frame.set(body, FRAME_HEADER_BYTES);
  return frame;
}

function proofOf(key: Uint8Array, challenge: Uint8Array, jobId: string, from: number, to: number): Buffer {
  return createHmac('sha256', key).update(challenge).update(`|${jobId}|${from}|${to}`).digest();
}

export class DataPlane {
  readonly stats: DataPlaneStats = { sent: 0, received: 0, rejected: 0 };
  private readonly handlers = new Map<string, Handler>();
  private readonly outgoing = new Map<number, OutgoingLink>();
  private readonly incoming = new Set<Socket>();
  /** Sockets whose peer said goodbye: their end is no fault. */
  private readonly ended = new WeakSet<Socket>();
  private readonly addressSubscription: Subscription;
  private readonly maxMessageBytes: number;
  private closing = false;
  private readonly sendBuffers = new BufferPool();
  private readonly receiveBuffers = new BufferPool();
  /** Frame buffers handed out with received messages, by their memory, until released. */
  private readonly lentReceiveBuffers = new WeakMap<ArrayBufferLike, Buffer>();

  private constructor(
    private readonly options: DataPlaneOptions,
    private readonly server: Server,
    readonly address: DataPlaneAddress,
  ) {
    if (options.key.byteLength !== DATA_PLANE_KEY_BYTES) throw new Error(`the data plane's job key must be ${DATA_PLANE_KEY_BYTES} bytes, got ${options.key.byteLength}`);
    this.maxMessageBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    server.on('connection', (socket) => this.accept(socket));
    this.addressSubscription = options.bus.subscribe(addressSubject(options.rank), (message, context) => {
      if (message.kind !== 'data-plane-address-request' || context.reply === undefined) return;
      options.bus.respond(context, { kind: 'data-plane-address', rank: options.rank, host: address.host, port: address.port });
    });
  }

  /** Listens on `options.host` (a free port) and answers address requests on the bus. */
  static async listen(options: DataPlaneOptions): Promise<DataPlane> {
    const server = createServer({ noDelay: true });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (error) => reject(new Error(`the data plane cannot listen on ${options.host}: ${error.message}; pick another --data-plane-host, or comm.dataPlane "nats"`)));
      server.listen(0, options.host, () => resolve());
    });
    const bound = server.address();
    if (bound === null || typeof bound === 'string') throw new Error('the data plane listener has no TCP address');
    return new DataPlane(options, server, { host: options.host, port: bound.port });
  }

  /** Messages for `subject` (a job-relative bus subject) arriving on any link. */
  subscribe(subject: string, handler: Handler): Subscription {
    if (this.handlers.has(subject)) throw new Error(`the data plane already delivers ${subject} to a handler`);
    this.handlers.set(subject, handler);
    return { unsubscribe: () => this.handlers.delete(subject) };
  }

  /**
   * Dials `peer` (its address asked on the bus) and proves this rank; resolves true once messages to it
   * can go directly, false (logged) when it cannot be reached, so its messages keep going through NATS.
   * Idempotent: every group asks for the links it needs.
   */
  async connect(peer: number): Promise<boolean> {
    let link = this.outgoing.get(peer);
    if (link === undefined) {
      const entry: OutgoingLink = { dialed: this.dial(peer), open: undefined };
      // Registered first, so the link is open by the time any awaiting caller resumes.
      entry.dialed.then(
        (socket) => {
          entry.open = socket;
        },
        () => undefined,
      );
      this.outgoing.set(peer, entry);
      link = entry;
    }
    try {
      await link.dialed;
      return true;
    } catch (error) {
      this.options.log(`data plane: rank ${this.options.rank} cannot reach rank ${peer} (${error instanceof Error ? error.message : String(error)}); its tensors go through NATS`);
      return false;
    }
  }

  /**
   * Sends directly when a link to `peer` is open, resolving once the bytes are handed to the socket;
   * undefined: the caller publishes on the bus instead. The tensor's bytes are copied into the frame,
   * unless `borrowed`: then they are written from where they are (no copy: 40 MB cost 8-20 ms here), and
   * the caller must leave them unchanged until the promise resolves (a ring all-reduce waits for it
   * before it overwrites a chunk it sent).
   */
  send(peer: number, subject: string, message: Message, options: { borrowed?: boolean } = {}): Promise<void> | undefined {
    const socket = this.outgoing.get(peer)?.open;
    if (socket === undefined || this.closing) return undefined;
    const subjectBytes = Buffer.from(subject, 'utf8');
    if (subjectBytes.byteLength > MAX_SUBJECT_BYTES) return undefined;
    const data = message.kind === 'collective' ? message.tensor.data : EMPTY;
    const envelope = { ...message, ...(message.kind === 'collective' ? { tensor: { ...message.tensor, data: EMPTY } } : {}), v: PROTOCOL_VERSION, job: this.options.jobId } as Envelope;
    const header = encodeEnvelope(envelope);
    const before = FRAME_HEADER_BYTES + 1 + subjectBytes.byteLength + 4 + header.byteLength;
    const dataOffset = before + ((4 - (before % 4)) % 4);
    if (dataOffset + data.byteLength - FRAME_HEADER_BYTES > this.maxMessageBytes) {
      throw new Error(`${message.kind} message of ${dataOffset + data.byteLength} bytes is above maxMessageBytes ${this.maxMessageBytes}`);
    }
    const borrowed = options.borrowed === true && data.byteLength >= RECYCLE_MIN_BYTES;
    const buffer = borrowed ? Buffer.allocUnsafe(dataOffset) : this.sendBuffers.take(dataOffset + data.byteLength);
    const frame = buffer.subarray(0, borrowed ? dataOffset : dataOffset + data.byteLength);
    frame.writeUInt32LE(dataOffset + data.byteLength - 4, 0);
    frame[4] = FRAME.message;
    frame[5] = subjectBytes.byteLength;
    subjectBytes.copy(frame, 6);
    frame.writeUInt32LE(header.byteLength, 6 + subjectBytes.byteLength);
    frame.set(header, 10 + subjectBytes.byteLength);
    this.stats.sent++;
    if (!borrowed) {
      frame.set(data, dataOffset);
      return new Promise<void>((resolve) =>
        socket.write(frame, () => {
          if (!this.closing) this.sendBuffers.give(buffer);
          resolve();
        }),
      );
    }
    // Corked, the head and the tensor's own bytes leave in one writev.
    socket.cork();
    socket.write(frame);
    const written = new Promise<void>((resolve) => socket.write(Buffer.from(data.buffer, data.byteOffset, data.byteLength), () => resolve()));
    socket.uncork();
    return written;
  }

  /**
   * Gives back the receive buffer under `data` (a tensor's bytes from a message this data plane
   * delivered) once its reader is done with them, so the next frame of that size reuses its pages: fresh
   * ones cost a page fault each (first touch) and the collector's time. Anything else is ignored.
   */
  release(data: Uint8Array): void {
    const buffer = this.lentReceiveBuffers.get(data.buffer);
    if (buffer === undefined || this.closing) return;
    this.lentReceiveBuffers.delete(data.buffer);
    this.receiveBuffers.give(buffer);
  }

  /** A buffer for a received frame of `bytes` spread over several socket chunks. */
  private receiveBuffer(bytes: number): Buffer {
    const buffer = this.receiveBuffers.take(bytes);
    // Small ones are slices of Node's shared pool: nothing to lend or give back.
    if (bytes >= RECYCLE_MIN_BYTES) this.lentReceiveBuffers.set(buffer.buffer, buffer);
    return buffer.subarray(0, bytes);
  }

  /** Says goodbye on every link, closes them and the listener. */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    this.addressSubscription.unsubscribe();
    const goodbye = frameOf(FRAME.goodbye, new Uint8Array(0));
    const sockets = [...this.incoming, ...[...this.outgoing.values()].flatMap((link) => (link.open === undefined ? [] : [link.open]))];
    await Promise.all(
      sockets.map(
        (socket) =>
          new Promise<void>((resolve) => {
            if (socket.destroyed) return resolve();
            socket.once('close', () => resolve());
            socket.end(goodbye);
            setTimeout(() => {
              socket.destroy();
              resolve();
            }, 1000).unref();
          }),
      ),
    );
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async dial(peer: number): Promise<Socket> {
    const { bus, jobId, rank, key } = this.options;
    const answer = await requestAddress(bus, peer);
    return new Promise<Socket>((resolve, reject) => {
      const socket = connect({ host: answer.host, port: answer.port, noDelay: true });
      const timer = setTimeout(() => fail(`no proof exchange within ${HANDSHAKE_TIMEOUT_MS} ms`), HANDSHAKE_TIMEOUT_MS);
      let answered = false;
      let proven = false;
      const fail = (reason: string) => {
        clearTimeout(timer);
        socket.destroy();
        reject(new Error(`${answer.host}:${answer.port}: ${reason}`));
      };
      const reader = new FrameReader(
        CHALLENGE_BYTES,
        (type, body) => {
          if (!answered && type === FRAME.challenge && body.byteLength === CHALLENGE_BYTES) {
            answered = true;
            socket.write(frameOf(FRAME.proof, encodeValue({ kind: 'data-plane-proof', job: jobId, from: rank, to: peer, proof: proofOf(key, body, jobId, rank, peer) })));
          } else if (answered && !proven && type === FRAME.accepted && body.byteLength === 0) {
            proven = true;
            clearTimeout(timer);
            socket.setKeepAlive(true, KEEP_ALIVE_MS);
            resolve(socket);
          } else if (type === FRAME.goodbye) {
            this.ended.add(socket);
          } else {
            fail(`unexpected frame ${type} from the listener`);
          }
        },
        (reason) => fail(reason),
      );
      socket.on('data', (chunk: Buffer) => reader.push(chunk));
      socket.on('error', (error) => (proven ? this.broken(peer, socket, error.message) : fail(error.message)));
      socket.on('close', () => {
        if (!proven) fail(answered ? 'the listener refused this rank\'s proof (another job key?)' : 'closed before the proof exchange');
        else this.broken(peer, socket, 'the connection closed');
      });
    });
  }

  private accept(socket: Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    const { jobId, rank, key } = this.options;
    const challenge = randomBytes(CHALLENGE_BYTES);
    let peer: number | undefined;
    const refuse = (reason: string) => {
      this.stats.rejected++;
      this.options.log(`data plane: rank ${rank} refused a connection from ${socket.remoteAddress}:${socket.remotePort}: ${reason}`);
      socket.destroy();
    };
    const timer = setTimeout(() => refuse(`no proof within ${HANDSHAKE_TIMEOUT_MS} ms`), HANDSHAKE_TIMEOUT_MS);
    socket.on('close', () => clearTimeout(timer));
    // Until the proof, frames are small: a stranger cannot make this rank buffer a large one.
    let reader = new FrameReader(
      1024,
      (type, body) => {
        if (peer === undefined) {
          const checked = type === FRAME.proof ? checkProof(body, key, challenge, jobId, rank) : `a frame of type ${type} before the proof`;
          if (typeof checked === 'string') return refuse(checked);
          peer = checked;
          clearTimeout(timer);
          this.incoming.add(socket);
          socket.setKeepAlive(true, KEEP_ALIVE_MS);
          reader = this.messageReader(socket, checked);
          socket.write(frameOf(FRAME.accepted, new Uint8Array(0)));
          return;
        }
      },
      (reason) => refuse(reason),
    );
    socket.on('data', (chunk: Buffer) => reader.push(chunk));
    socket.on('error', (error) => {
      if (peer !== undefined) this.broken(peer, socket, error.message);
    });
    socket.on('close', () => {
      this.incoming.delete(socket);
      if (peer !== undefined) this.broken(peer, socket, 'the connection closed');
    });
    socket.write(frameOf(FRAME.challenge, challenge));
  }

  private messageReader(socket: Socket, peer: number): FrameReader {
    return new FrameReader(
      this.maxMessageBytes + 1 + MAX_SUBJECT_BYTES,
      (type, body) => {
        if (type === FRAME.goodbye) {
          this.ended.add(socket);
          return;
        }
        const parsed = type === FRAME.message ? parseMessageFrame(body) : undefined;
        if (parsed === undefined) {
          this.stats.rejected++;
          this.options.log(`data plane: rank ${this.options.rank} dropped a bad frame (type ${type}) from rank ${peer}`);
          return;
        }
        const { subject, raw } = parsed;
        const result = validateMessage(raw, this.options.jobId);
        const handler = this.handlers.get(subject);
        if (!result.ok || handler === undefined) {
          this.stats.rejected++;
          this.options.log(`data plane: rank ${this.options.rank} dropped a message on ${subject} from rank ${peer}: ${result.ok ? 'nobody receives that subject here' : `${result.reason}: ${result.detail}`}`);
          return;
        }
        this.stats.received++;
        const { v: _version, job: _job, ...message } = result.envelope;
        try {
          handler(message as Message);
        } catch (error) {
          this.options.log(`data plane: the handler of ${subject} threw: ${error instanceof Error ? error.message : String(error)}`);
        }
      },
      (reason) => {
        this.stats.rejected++;
        this.options.log(`data plane: rank ${this.options.rank} closed its link from rank ${peer}: ${reason}`);
        socket.destroy();
      },
      (bytes) => this.receiveBuffer(bytes),
    );
  }

  private broken(peer: number, socket: Socket, reason: string): void {
    const link = this.outgoing.get(peer);
    if (link?.open === socket) link.open = undefined;
    if (this.closing || this.ended.has(socket)) return;
    // Reported once per socket.
    this.ended.add(socket);
    this.options.onBroken?.(peer, reason);
  }
}

const EMPTY = new Uint8Array(0);

/**
 * A message frame's subject and envelope, its tensor's bytes (what follows the envelope, 4-aligned from
 * the frame's start) put back in place; undefined when the frame is not one.
 */
function parseMessageFrame(body: Buffer): { subject: string; raw: unknown } | undefined {
  if (body.byteLength < 1) return undefined;
  const subjectEnd = 1 + body[0]!;
  if (body.byteLength < subjectEnd + 4) return undefined;
  const headerLength = body.readUInt32LE(subjectEnd);
  const headerEnd = subjectEnd + 4 + headerLength;
  if (headerEnd > body.byteLength) return undefined;
  const before = FRAME_HEADER_BYTES + headerEnd;
  const dataStart = before + ((4 - (before % 4)) % 4) - FRAME_HEADER_BYTES;
  if (dataStart > body.byteLength) return undefined;
  let raw: unknown;
  try {
    raw = decodeEnvelope(body.subarray(subjectEnd + 4, headerEnd));
  } catch {
    return undefined;
  }
  const data = body.subarray(dataStart);
  if (typeof raw === 'object' && raw !== null && (raw as Record<string, unknown>).kind === 'collective') {
    const tensor = (raw as Record<string, unknown>).tensor;
    if (typeof tensor === 'object' && tensor !== null) (tensor as Record<string, unknown>).data = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  } else if (data.byteLength > 0) {
    return undefined;
  }
  return { subject: body.toString('utf8', 1, subjectEnd), raw };
}

function addressSubject(rank: number): string {
  return `dataplane.addr.${rank}`;
}

/** Asks `peer` for its data plane address until it answers (it may still be starting). */
function requestAddress(bus: Bus, peer: number): Promise<DataPlaneAddress> {
  return requestUntil(bus, addressSubject(peer), { kind: 'data-plane-address-request', rank: peer }, {
    accept: (answer) => (answer.kind === 'data-plane-address' && answer.rank === peer ? { host: answer.host, port: answer.port } : undefined),
    deadlineMs: ADDRESS_TIMEOUT_MS,
    attemptMs: 1000,
    pauseMs: 100,
    failure: `rank ${peer} announced no data plane address`,
  });
}

/** The peer rank a proof frame proves, or why it proves nothing. */
function checkProof(body: Uint8Array, key: Uint8Array, challenge: Uint8Array, jobId: string, rank: number): number | string {
  let fields: Record<string, unknown>;
  try {
    const decoded = decodeEnvelope(body);
    if (typeof decoded !== 'object' || decoded === null) return 'the proof is not a map';
    fields = decoded as Record<string, unknown>;
  } catch {
    return 'the first frame is not a proof';
  }
  if (fields.kind !== 'data-plane-proof') return 'the first frame is not a proof';
  if (fields.job !== jobId) return `the proof is for job ${JSON.stringify(fields.job)}, not this one`;
  if (fields.to !== rank) return `the proof is for rank ${JSON.stringify(fields.to)}, not ${rank}`;
  const from = fields.from;
  if (!Number.isSafeInteger(from) || (from as number) < 0) return 'the proof names no rank';
  const proof = fields.proof;
  if (!(proof instanceof Uint8Array) || proof.byteLength !== 32) return 'the proof has no 32-byte tag';
  const expected = proofOf(key, challenge, jobId, from as number, rank);
  if (!timingSafeEqual(expected, proof)) return `a wrong proof for rank ${from} (another job's key?)`;
  return from as number;
}

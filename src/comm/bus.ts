/**
 * Implements: the message bus of one job over any Transport: typed messages in, typed messages out.
 * Publishing adds the protocol version and job id, encodes with msgpackr and chunks above max_payload.
 * Receiving reassembles, decodes and validates; only valid messages of this job reach a handler. Bad
 * messages are counted in `stats.rejected` and logged (rate-limited), and closing the bus logs their
 * totals; a throwing handler is counted and logged, never allowed to crash the process.
 */
import { Chunker, Reassembler, parseFrame, DEFAULT_CHUNK_TIMEOUT_MS, DEFAULT_MAX_MESSAGE_BYTES, WHOLE_HEADER_BYTES } from './chunking.ts';
import { decodeEnvelope, encodeEnvelope } from './codec.ts';
import { FrameSigner, REPLY_SUBJECT, SIGNATURE_TRAILER_BYTES, type SignatureProblem } from './frame-signing.ts';
import { PROTOCOL_VERSION, type Envelope, type Message } from '../protocol/messages.ts';
import { checkJobId, jobSubject } from './subjects.ts';
import type { IncomingMessage, Subscription, Transport } from './transport.ts';
import { validateMessage, type ValidationResult } from '../protocol/validate.ts';

export interface BusOptions {
  jobId: string;
  transport: Transport;
  log?: (line: string) => void;
  /** Largest message (after encoding) accepted or sent in chunks; default 512 MiB. */
  maxMessageBytes?: number;
  /** How long an incomplete chunked message may wait for its next chunk; default 30 s. */
  chunkTimeoutMs?: number;
  /**
   * The job key (frame-signing.ts): every frame sent is signed with it, and frames received without its
   * valid signature are dropped and counted. Absent: frames travel unsigned (tests of the codec).
   */
  key?: Buffer;
}

export interface ReplyContext {
  subject: string;
  reply?: string;
}

export type BusRejectReason = 'version' | 'job' | 'malformed' | 'unknown-kind' | 'oversized' | 'chunk' | SignatureProblem;

export interface BusStats {
  sent: number;
  received: number;
  chunksSent: number;
  rejected: Record<BusRejectReason, number>;
  /** Handlers that threw (or whose promise rejected). */
  handlerErrors: number;
}

/** Per reason: log the first few, then at most one line per window with the number suppressed. */
const LOG_BURST = 5;
const LOG_WINDOW_MS = 10_000;
/** Longest detail of a dropped message that is logged. */
const MAX_DETAIL_CHARS = 300;

/** Decodes and validates one unframed payload; never throws. */
export function decodeAndValidate(bytes: Uint8Array, expectedJob?: string): ValidationResult {
  let raw: unknown;
  try {
    raw = decodeEnvelope(bytes);
  } catch (error) {
    return { ok: false, reason: 'malformed', detail: `undecodable msgpack (${bytes.byteLength} bytes): ${(error as Error)?.message ?? String(error)}` };
  }
  return validateMessage(raw, expectedJob);
}

export class Bus {
  readonly jobId: string;
  readonly stats: BusStats = {
    sent: 0,
    received: 0,
    chunksSent: 0,
    rejected: { version: 0, job: 0, malformed: 0, 'unknown-kind': 0, oversized: 0, chunk: 0, unsigned: 0, forged: 0, replayed: 0 },
    handlerErrors: 0,
  };
  private readonly transport: Transport;
  private readonly log: (line: string) => void;
  private readonly maxMessageBytes: number;
  private readonly chunkTimeoutMs: number;
  private readonly chunker: Chunker;
  private readonly signer: FrameSigner | undefined;
  private readonly subscriptions = new Set<{ subscription: Subscription; reassembler: Reassembler }>();
  private readonly logWindows = new Map<string, { start: number; logged: number; suppressed: number }>();
  private closed = false;

  constructor(options: BusOptions) {
    this.jobId = checkJobId(options.jobId);
    this.transport = options.transport;
    this.log = options.log ?? ((line) => process.stderr.write(line + '\n'));
    this.maxMessageBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    this.chunkTimeoutMs = options.chunkTimeoutMs ?? DEFAULT_CHUNK_TIMEOUT_MS;
    this.signer = options.key === undefined ? undefined : new FrameSigner(options.key);
    // Each frame grows by its signature: chunks are cut that much smaller.
    this.chunker = new Chunker(this.transport.maxPayload - (this.signer === undefined ? 0 : SIGNATURE_TRAILER_BYTES));
  }

  /** Full subject for a job-relative one: `gh.<jobId>.<relative>`. */
  subject(relative: string): string {
    return jobSubject(this.jobId, relative, true);
  }

  /** Encodes (v, job added), chunks when above maxPayload, publishes. */
  publish(relative: string, message: Message): void {
    this.checkOpen();
    const subject = jobSubject(this.jobId, relative);
    const roomAndBytes = this.encode(message, subject, WHOLE_HEADER_BYTES);
    const byteLength = roomAndBytes.byteLength - WHOLE_HEADER_BYTES;
    if (byteLength > this.maxMessageBytes) {
      throw new Error(
        `${message.kind} message of ${byteLength} bytes on ${subject} is above maxMessageBytes ${this.maxMessageBytes}: ` +
          'split it or raise maxMessageBytes on every bus of the job',
      );
    }
    const frames = this.chunker.framesInPlace(roomAndBytes);
    for (const frame of frames) this.transport.publish(subject, this.signed(frame, subject));
    this.stats.sent++;
    if (frames.length > 1) this.stats.chunksSent += frames.length;
  }

  /** Handler gets only validated messages of this job; bad ones are logged (rate-limited) and counted. */
  subscribe(relative: string, handler: (message: Message, context: ReplyContext) => void): Subscription {
    this.checkOpen();
    const subject = jobSubject(this.jobId, relative, true);
    const reassembler = new Reassembler({
      maxMessageBytes: this.maxMessageBytes,
      timeoutMs: this.chunkTimeoutMs,
      onDrop: (reason, detail) => this.reject(reason, `on ${subject}: ${detail}`),
    });
    const subscription = this.transport.subscribe(subject, (incoming) => this.receive(incoming, reassembler, handler));
    const entry = { subscription, reassembler };
    this.subscriptions.add(entry);
    return {
      unsubscribe: () => {
        if (!this.subscriptions.delete(entry)) return;
        subscription.unsubscribe();
        reassembler.dispose();
      },
    };
  }

  /** Request/reply; both must fit one payload (control traffic). Rejects with TransportTimeoutError. */
  async request(relative: string, message: Message, timeoutMs: number): Promise<Message> {
    this.checkOpen();
    const subject = jobSubject(this.jobId, relative);
    const frame = this.singleFrame(message, subject);
    this.stats.sent++;
    const signedAnswer = await this.transport.request(subject, this.signed(frame, subject), timeoutMs);
    const answer = this.verified(signedAnswer, REPLY_SUBJECT, `reply on ${subject}`);
    if (answer === undefined) throw new Error(`the reply to ${message.kind} on ${subject} is not signed with the job's key`);
    const parsed = parseFrame(answer);
    if (parsed.type !== 'whole') {
      const detail = parsed.type === 'bad' ? parsed.detail : 'a reply must fit one payload, got a chunk';
      this.reject('malformed', `reply on ${subject}: ${detail}`);
      throw new Error(`malformed reply to ${message.kind} on ${subject}: ${detail}`);
    }
    const result = decodeAndValidate(parsed.bytes, this.jobId);
    if (!result.ok) {
      this.reject(result.reason, `reply on ${subject}: ${result.detail}`);
      throw new Error(`rejected reply to ${message.kind} on ${subject} (${result.reason}): ${result.detail}`);
    }
    this.stats.received++;
    return stripEnvelope(result.envelope);
  }

  respond(context: ReplyContext, message: Message): void {
    this.checkOpen();
    if (context.reply === undefined) {
      throw new Error(`cannot answer the message on ${context.subject}: its sender used publish, not request`);
    }
    this.transport.publish(context.reply, this.signed(this.singleFrame(message, context.reply), REPLY_SUBJECT));
    this.stats.sent++;
  }

  private signed(frame: Uint8Array, subject: string): Uint8Array {
    return this.signer === undefined ? frame : this.signer.sign(frame, subject);
  }

  /** The frame's payload, or undefined (counted and logged) when its signature for `subject` is missing, wrong or replayed. */
  private verified(data: Uint8Array, subject: string, where: string): Uint8Array | undefined {
    if (this.signer === undefined) return data;
    const result = this.signer.verify(data, subject);
    if (result.ok) return result.payload;
    this.reject(result.reason, `${where}: ${result.detail}`);
    return undefined;
  }

  flush(): Promise<void> {
    return this.transport.flush();
  }

  /**
   * "ignored N malformed messages, M from other jobs or protocol versions (by reason)", or undefined when
   * nothing was refused. Malformed covers undecodable, unknown kinds, bad chunks and oversized messages.
   */
  rejectionSummary(): string | undefined {
    const { version, job, unsigned, forged, replayed, ...bad } = this.stats.rejected;
    const malformed = Object.values(bad).reduce((a, b) => a + b, 0);
    const unkeyed = unsigned + forged + replayed;
    if (malformed + version + job + unkeyed === 0) return undefined;
    const reasons = Object.entries(this.stats.rejected)
      .filter(([, n]) => n > 0)
      .map(([reason, n]) => `${reason} ${n}`)
      .join(', ');
    const signatures = unkeyed === 0 ? '' : `, ${unkeyed} without the job key's signature or replayed`;
    return `ignored ${malformed} malformed message${malformed === 1 ? '' : 's'}, ${version + job} from other jobs or protocol versions${signatures} (${reasons})`;
  }

  /**
   * A process's last word: delivers what it published and closes, waiting at most `waitMs` for each, as
   * a server that is gone (or a host that no longer answers: each reconnect attempt then lasts the
   * connection timeout) would keep the process waiting for minutes.
   */
  async finish(waitMs = FINISH_WAIT_MS): Promise<void> {
    await settledWithin(this.flush(), waitMs);
    await settledWithin(this.close(), waitMs);
  }

  /** Unsubscribes everything and closes the transport (the bus owns it); says what it refused, if anything. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const summary = this.rejectionSummary();
    if (summary !== undefined) this.log(`bus ${this.jobId}: ${summary}`);
    for (const { subscription, reassembler } of this.subscriptions) {
      subscription.unsubscribe();
      reassembler.dispose();
    }
    this.subscriptions.clear();
    await this.transport.close();
  }

  private encode(message: Message, subject: string, room = 0): Uint8Array {
    const envelope = { ...message, v: PROTOCOL_VERSION, job: this.jobId } as Envelope;
    try {
      return encodeEnvelope(envelope, room);
    } catch (error) {
      throw new Error(`cannot encode the ${message.kind} message for ${subject}: ${(error as Error).message}`);
    }
  }

  private singleFrame(message: Message, subject: string): Uint8Array {
    const bytes = this.encode(message, subject);
    if (!this.chunker.fitsWhole(bytes.byteLength)) {
      throw new Error(
        `${message.kind} message of ${bytes.byteLength} bytes for ${subject} does not fit one payload ` +
          `(max_payload ${this.transport.maxPayload}): requests and replies are for small control messages, publish large ones`,
      );
    }
    return this.chunker.wholeFrame(bytes);
  }

  private receive(
    incoming: IncomingMessage,
    reassembler: Reassembler,
    handler: (message: Message, context: ReplyContext) => void,
  ): void {
    if (this.closed) return;
    const payload = this.verified(incoming.data, incoming.subject, `on ${incoming.subject}`);
    if (payload === undefined) return;
    const frame = parseFrame(payload);
    let bytes: Uint8Array;
    if (frame.type === 'bad') {
      this.reject('malformed', `on ${incoming.subject}: ${frame.detail}`);
      return;
    } else if (frame.type === 'chunk') {
      // Drops are counted through the reassembler's onDrop. The chunk is copied out either way.
      const result = reassembler.accept(frame.header, frame.bytes);
      this.transport.recycle?.(incoming.data);
      if (result.status !== 'complete') return;
      bytes = result.bytes;
    } else {
      bytes = frame.bytes;
    }
    const result = decodeAndValidate(bytes, this.jobId);
    if (!result.ok) {
      this.reject(result.reason, `on ${incoming.subject}: ${result.detail}`);
      return;
    }
    if (ownsNoView(result.envelope, bytes)) {
      if (frame.type === 'chunk') reassembler.recycle(bytes);
      else this.transport.recycle?.(incoming.data);
    }
    this.stats.received++;
    const context: ReplyContext = incoming.reply === undefined ? { subject: incoming.subject } : { subject: incoming.subject, reply: incoming.reply };
    const message = stripEnvelope(result.envelope);
    try {
      const returned: unknown = handler(message, context);
      if (returned instanceof Promise) returned.catch((error: unknown) => this.handlerFailed(error, message, incoming.subject));
    } catch (error) {
      this.handlerFailed(error, message, incoming.subject);
    }
  }

  private handlerFailed(error: unknown, message: Message, subject: string): void {
    this.stats.handlerErrors++;
    const text = error instanceof Error ? (error.stack ?? error.message) : String(error);
    this.rateLimitedLog('handler', `bus ${this.jobId}: handler for ${message.kind} on ${subject} threw: ${text}`);
  }

  private reject(reason: BusRejectReason, detail: string): void {
    this.stats.rejected[reason]++;
    // The detail may quote the sender's bytes (a decoder's error message): no terminal control codes, no megabytes.
    const printable = detail.replace(/[\u0000-\u001f\u007f-\u009f]/g, '?');
    const shown = printable.length > MAX_DETAIL_CHARS ? `${printable.slice(0, MAX_DETAIL_CHARS)}…` : printable;
    this.rateLimitedLog(reason, `bus ${this.jobId}: dropped a message (${reason}) ${shown}`);
  }

  private rateLimitedLog(key: string, line: string): void {
    const now = Date.now();
    let window = this.logWindows.get(key);
    if (window === undefined || now - window.start >= LOG_WINDOW_MS) {
      if (window !== undefined && window.suppressed > 0) {
        this.log(`bus ${this.jobId}: ${window.suppressed} more '${key}' problems were not logged in the last ${LOG_WINDOW_MS / 1000} s`);
      }
      window = { start: now, logged: 0, suppressed: 0 };
      this.logWindows.set(key, window);
    }
    if (window.logged < LOG_BURST) {
      window.logged++;
      this.log(line);
    } else {
      window.suppressed++;
    }
  }

  private checkOpen(): void {
    if (this.closed) throw new Error(`bus of job ${this.jobId} is closed`);
  }
}

/**
 * Whether a decoded message holds no view into the bytes it came from, so they may be reused. Known only
 * for collective pieces, whose one binary field is the tensor (validation keeps declared fields only);
 * any other kind (an actor payload may hold anything) answers no.
 */
function ownsNoView(envelope: Envelope, bytes: Uint8Array): boolean {
  return envelope.kind === 'collective' && envelope.tensor.data.buffer !== bytes.buffer;
}

/** Handlers see the message itself; version and job id are the envelope's business. */
function stripEnvelope(envelope: Envelope): Message {
  const { v: _version, job: _job, ...message } = envelope;
  return message as Message;
}

/** How long a process's last flush and close may wait for a server that may be gone. */
const FINISH_WAIT_MS = 5_000;

/** Waits for `work` to settle, at most `ms`; its outcome does not matter. */
async function settledWithin(work: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([work.catch(() => undefined), new Promise((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}

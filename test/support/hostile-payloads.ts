/**
 * Test helper: seeded hostile payloads for a job's bus subjects, each with the verdict the receiving bus
 * must reach. Random bytes; messages that would stop or corrupt the job were they accepted (shutdown,
 * fatal, step-go stop, a collective piece for the subject's own group) sent under another job id or
 * protocol version, bit-flipped, or truncated under the real job id; `__proto__`/`constructor` keys;
 * msgpack headers declaring gigabytes; forged chunk headers. Nothing generated is a message the job
 * would accept: every candidate goes through the bus's own decoder first and is redrawn if it passes.
 */
import { decodeAndValidate } from '../../src/comm/bus.ts';
import { CHUNK_HEADER_BYTES, FRAME_CHUNK, FRAME_WHOLE, parseFrame } from '../../src/comm/chunking.ts';
import { encodeEnvelope } from '../../src/comm/codec.ts';
import { PROTOCOL_VERSION, type Envelope, type Message } from '../../src/protocol/messages.ts';
import { toWireTensor } from '../../src/comm/tensor-wire.ts';
import { hashString, uniformAt } from '../../src/model/rng.ts';

/** How the receiving bus must count a payload: malformed (any reason), or from another job or version. */
export type Verdict = 'malformed' | 'other-job-or-version';

export interface HostilePayload {
  frame: Uint8Array;
  /** Undefined for chunk frames, whose count depends on the reassembler's state (a message counts once). */
  verdict?: Verdict;
  what: string;
}

/** The group a collective subject (`coll.<group>.<rank>` or `coll-ready.<group>.<rank>`) belongs to. */
function groupOf(relativeSubject: string): { group: string; rank: number } | undefined {
  const match = /^coll(?:-ready)?\.(.+)\.(\d+)$/.exec(relativeSubject);
  return match === null ? undefined : { group: match[1]!, rank: Number(match[2]) };
}

export class HostilePayloads {
  private counter = 0;
  private readonly key: number;

  constructor(
    private readonly jobId: string,
    seed: string,
  ) {
    this.key = hashString(seed);
  }

  /**
   * One payload for `relativeSubject` (without `gh.<job>.`). `chunks`: forged chunk frames are allowed
   * (their exact count is not predictable, see HostilePayload.verdict).
   */
  next(relativeSubject: string, chunks: boolean): HostilePayload {
    for (;;) {
      const candidate = this.draw(relativeSubject, chunks);
      const verdict = this.verdictOf(candidate.frame);
      if (verdict === 'accepted') continue;
      if (verdict === 'chunk' && !chunks) continue;
      return { ...candidate, ...(verdict === 'chunk' ? {} : { verdict }) };
    }
  }

  private random(): number {
    return uniformAt(this.key, this.counter++);
  }

  private int(below: number): number {
    return Math.floor(this.random() * below);
  }

  private pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }

  private verdictOf(frame: Uint8Array): Verdict | 'accepted' | 'chunk' {
    const parsed = parseFrame(frame);
    if (parsed.type === 'bad') return 'malformed';
    if (parsed.type === 'chunk') return 'chunk';
    const result = decodeAndValidate(parsed.bytes, this.jobId);
    if (result.ok) return 'accepted';
    return result.reason === 'job' || result.reason === 'version' ? 'other-job-or-version' : 'malformed';
  }

  private draw(subject: string, chunks: boolean): { frame: Uint8Array; what: string } {
    const roll = this.int(chunks ? 8 : 7);
    switch (roll) {
      case 0:
        return { frame: this.randomBytes(), what: 'random bytes' };
      case 1:
        return { frame: whole(this.encode(this.dangerous(subject), this.pick(['intruder-job', this.jobId + 'x', '']), PROTOCOL_VERSION)), what: 'another job' };
      case 2:
        return { frame: whole(this.encode(this.dangerous(subject), this.jobId, this.pick([0, PROTOCOL_VERSION + 1, -1, 2 ** 40]))), what: 'another protocol version' };
      case 3:
        return { frame: whole(this.flipBits(this.encode(this.dangerous(subject), 'intruder-job', PROTOCOL_VERSION))), what: 'bit-flipped message of another job' };
      case 4: {
        const bytes = this.encode(this.dangerous(subject), this.jobId, PROTOCOL_VERSION);
        return { frame: whole(bytes.subarray(0, this.int(bytes.length))), what: 'truncated message of this job' };
      }
      case 5:
        return { frame: whole(this.prototypeKeys()), what: '__proto__ / constructor keys' };
      case 6:
        return { frame: whole(this.hugeDeclaredLength()), what: 'msgpack declaring gigabytes' };
      default:
        return { frame: this.forgedChunk(), what: 'forged chunk header' };
    }
  }

  private randomBytes(): Uint8Array {
    const bytes = new Uint8Array(this.int(400));
    for (let i = 0; i < bytes.length; i++) bytes[i] = this.int(256);
    // Mostly whole frames, so the decoder (not just the frame parser) gets them; chunk frames are drawn elsewhere.
    if (bytes.length > 0) bytes[0] = this.random() < 0.8 ? FRAME_WHOLE : 2 + this.int(254);
    if (bytes.length > 1 && this.random() < 0.5) bytes[1] = 0x80 | (bytes[1]! & 0x0f);
    return bytes;
  }

  /** A message that would end or corrupt the job if this bus accepted it. */
  private dangerous(subject: string): Message {
    const target = groupOf(subject);
    const messages: Message[] = [
      { kind: 'shutdown', reason: 'hostile', exitCode: 1 },
      { kind: 'fatal', rank: 0, reason: 'hostile' },
      { kind: 'step-go', step: 1, action: 'stop' },
      { kind: 'heartbeat', rank: 0, step: 99, state: 'done', rssMb: 1 },
      { kind: 'register', rank: 0, node: 0, pid: 1, host: 'intruder' },
      { kind: 'control', command: 'stop' },
    ];
    if (target !== undefined) {
      const values = Float32Array.from({ length: 1 + this.int(64) }, () => this.random() * 1e6);
      messages.push({ kind: 'collective', group: target.group, op: this.pick(['send', 'all-reduce', 'broadcast'] as const), seq: this.int(8), tag: this.pick(['', 'act', 'grad']), from: this.int(4), part: this.int(4), tensor: toWireTensor(values, [values.length]) });
    }
    return this.pick(messages);
  }

  private encode(message: Message, job: string, version: number): Uint8Array {
    // A copy: encodeEnvelope's bytes are a view into a buffer msgpackr reuses.
    return encodeEnvelope({ ...message, v: version, job } as Envelope).slice();
  }

  private flipBits(bytes: Uint8Array): Uint8Array {
    for (let flips = 1 + this.int(3); flips > 0; flips--) bytes[this.int(bytes.length)] ^= 1 << this.int(8);
    return bytes;
  }

  private prototypeKeys(): Uint8Array {
    const job = this.pick(['intruder-job', this.jobId]);
    const kind = job === this.jobId ? this.pick(['__proto__', 'constructor', 'toString']) : this.pick(['fatal', 'shutdown']);
    const text = `{"__proto__":{"polluted":true,"kind":"shutdown"},"constructor":{"prototype":{"polluted":true}},"kind":${JSON.stringify(kind)},"v":${PROTOCOL_VERSION},"job":${JSON.stringify(job)},"rank":0,"reason":"","exitCode":1}`;
    return encodeEnvelope(JSON.parse(text) as Envelope).slice();
  }

  private hugeDeclaredLength(): Uint8Array {
    const header = this.pick([0xdb, 0xc6, 0xdd, 0xdf, 0xc9]);
    const tail = Uint8Array.from({ length: this.int(32) }, () => this.int(256));
    return Uint8Array.of(header, 0xff, 0xff, 0xff, 0xf0 | this.int(16), ...tail);
  }

  private forgedChunk(): Uint8Array {
    const body = new Uint8Array(this.int(600));
    const frame = new Uint8Array(CHUNK_HEADER_BYTES + body.length);
    const view = new DataView(frame.buffer);
    view.setUint8(0, FRAME_CHUNK);
    view.setUint32(1, this.int(4), true);
    view.setUint32(5, this.int(4), true);
    view.setUint32(9, this.int(2 ** 32), true);
    const shape = this.int(4);
    // Announced totals far beyond the chunk (and beyond maxMessageBytes), orphaned later chunks, empty counts.
    view.setUint32(13, shape === 1 ? 1 + this.int(1000) : 0, true);
    view.setUint32(17, shape === 2 ? 0 : 1 + this.int(2 ** 20), true);
    view.setUint32(21, shape === 3 ? 0xffff_ffff : this.int(2 ** 31), true);
    frame.set(body, CHUNK_HEADER_BYTES);
    return this.random() < 0.1 ? frame.subarray(0, this.int(CHUNK_HEADER_BYTES)) : frame;
  }
}

function whole(bytes: Uint8Array): Uint8Array {
  const frame = new Uint8Array(bytes.length + 1);
  frame[0] = FRAME_WHOLE;
  frame.set(bytes, 1);
  return frame;
}

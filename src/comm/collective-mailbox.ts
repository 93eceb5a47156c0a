/**
 * Implements: where the pieces of collective and point-to-point calls wait for the call that consumes
 * them. A call is opened with an identity (op, seq, tag) and a deadline; each piece is matched to its call
 * by that identity and to its slot by (from, part), never by arrival order. Pieces of a call not opened
 * yet are buffered (a fast rank may be one collective ahead); pieces of a call that already finished,
 * and repeats of a piece, are dropped and counted, so nothing late can leak into a later call.
 */
import type { CollectiveMessage } from '../protocol/messages.ts';

/** A wait that passed its deadline; names what was awaited and from whom, so a hang becomes a diagnosis. */
export class CollectiveTimeoutError extends Error {
  override name = 'CollectiveTimeoutError';
  constructor(
    readonly group: string,
    readonly op: string,
    readonly seq: number,
    readonly missingRanks: number[],
    readonly timeoutMs: number,
    readonly rank: number,
  ) {
    super(
      `${op} #${seq} in process group '${group}' (rank ${rank}) timed out after ${timeoutMs} ms waiting for ` +
        `rank${missingRanks.length === 1 ? '' : 's'} ${missingRanks.join(', ')}: check that ` +
        `${missingRanks.length === 1 ? 'it is' : 'they are'} alive and call the same collectives of this group in the same order`,
    );
  }
}

/** Ranks called different collectives at the same position of a group's sequence: a program bug. */
export class CollectiveMismatchError extends Error {
  override name = 'CollectiveMismatchError';
}

export interface CallIdentity {
  op: CollectiveMessage['op'];
  seq: number;
  /** '' for collectives; the user's tag for send/recv. */
  tag: string;
  /** For send/recv, the sending rank (each sender numbers its own stream); undefined for collectives. */
  stream?: number;
}

export interface MailboxOptions {
  group: string;
  /** This process' rank, for error messages. */
  rank: number;
  /** Whether a piece belongs to a call that has already run (its sequence number is used up). */
  isSpent: (piece: CollectiveMessage) => boolean;
  log: (line: string) => void;
}

interface Waiter {
  from: number;
  part: number;
  resolve: (piece: CollectiveMessage) => void;
  reject: (error: Error) => void;
}

/** Collectives share one sequence per group; send/recv number each (sender, tag) stream apart. */
function callKey(identity: CallIdentity): string {
  return identity.op === 'send'
    ? JSON.stringify(['send', identity.stream, identity.tag, identity.seq])
    : JSON.stringify(['collective', identity.seq]);
}

function identityOf(piece: CollectiveMessage): CallIdentity {
  return piece.op === 'send'
    ? { op: 'send', seq: piece.seq, tag: piece.tag, stream: piece.from }
    : { op: piece.op, seq: piece.seq, tag: piece.tag };
}

function slotKey(from: number, part: number): string {
  return `${from}/${part}`;
}

/** One call in progress: its waiting slots, its deadline, and the failure that ended it early, if any. */
export class OpenCall {
  readonly waiting = new Map<string, Waiter>();
  failure: Error | undefined;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly mailbox: CollectiveMailbox,
    readonly identity: CallIdentity,
    readonly key: string,
    readonly timeoutMs: number,
    private readonly describe: string,
  ) {
    this.timer = setTimeout(() => this.timeOut(), timeoutMs);
  }

  /** The piece `part` from rank `from`: at once if it already arrived, else when it does (or the call fails). */
  take(from: number, part: number): Promise<CollectiveMessage> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    const buffered = this.mailbox.claim(this.key, slotKey(from, part));
    if (buffered !== undefined) return Promise.resolve(buffered);
    return new Promise((resolve, reject) => {
      this.waiting.set(slotKey(from, part), { from, part, resolve, reject });
    });
  }

  /** Ends the call: later pieces for it are spent, buffered repeats are freed. */
  close(): void {
    clearTimeout(this.timer);
    this.mailbox.forget(this);
  }

  fail(error: Error): void {
    if (this.failure !== undefined) return;
    this.failure = error;
    const waiters = [...this.waiting.values()];
    this.waiting.clear();
    for (const waiter of waiters) waiter.reject(error);
    this.close();
  }

  private timeOut(): void {
    const missing = [...new Set([...this.waiting.values()].map((waiter) => waiter.from))].sort((a, b) => a - b);
    this.fail(new CollectiveTimeoutError(this.mailbox.group, this.describe, this.identity.seq, missing, this.timeoutMs, this.mailbox.rank));
  }
}

export class CollectiveMailbox {
  readonly group: string;
  readonly rank: number;
  /** Pieces dropped as late, repeated or mismatched (each is also logged). */
  dropped = 0;
  private readonly open = new Map<string, OpenCall>();
  /** Call key -> slot key -> piece, for pieces whose call is not waiting for them yet. */
  private readonly buffered = new Map<string, Map<string, CollectiveMessage>>();

  constructor(private readonly options: MailboxOptions) {
    this.group = options.group;
    this.rank = options.rank;
  }

  /** `describe` names the call in errors (e.g. `all-reduce`, `recv from 3 tag 'act'`). */
  openCall(identity: CallIdentity, timeoutMs: number, describe: string): OpenCall {
    const key = callKey(identity);
    if (this.open.has(key)) throw new Error(`process group '${this.group}': ${describe} #${identity.seq} is already in progress`);
    const call = new OpenCall(this, identity, key, timeoutMs, describe);
    this.open.set(key, call);
    for (const piece of this.buffered.get(key)?.values() ?? []) {
      if (piece.op !== identity.op) {
        call.fail(this.mismatch(identity, piece));
        break;
      }
    }
    return call;
  }

  deliver(piece: CollectiveMessage): void {
    const key = callKey(identityOf(piece));
    const call = this.open.get(key);
    if (call === undefined && this.options.isSpent(piece)) {
      this.drop(piece, 'its call has already finished (a late or repeated piece)');
      return;
    }
    if (call !== undefined && call.identity.op !== piece.op) {
      this.drop(piece, 'it belongs to another collective');
      call.fail(this.mismatch(call.identity, piece));
      return;
    }
    const slot = slotKey(piece.from, piece.part);
    const waiter = call?.waiting.get(slot);
    if (call !== undefined && waiter !== undefined) {
      call.waiting.delete(slot);
      waiter.resolve(piece);
      return;
    }
    let slots = this.buffered.get(key);
    if (slots === undefined) this.buffered.set(key, (slots = new Map()));
    if (slots.has(slot)) {
      this.drop(piece, 'the same piece is already waiting (a repeat)');
      return;
    }
    slots.set(slot, piece);
  }

  /** Fails every call in progress (the group is closing or its transport died). */
  failAll(error: Error): void {
    for (const call of [...this.open.values()]) call.fail(error);
    this.buffered.clear();
  }

  /** @internal Removes and returns a buffered piece. */
  claim(callKey: string, slot: string): CollectiveMessage | undefined {
    const slots = this.buffered.get(callKey);
    const piece = slots?.get(slot);
    if (slots !== undefined && piece !== undefined) {
      slots.delete(slot);
      if (slots.size === 0) this.buffered.delete(callKey);
    }
    return piece;
  }

  /** @internal */
  forget(call: OpenCall): void {
    if (this.open.get(call.key) !== call) return;
    this.open.delete(call.key);
    const leftovers = this.buffered.get(call.key);
    if (leftovers !== undefined) {
      for (const piece of leftovers.values()) this.drop(piece, 'its call finished without it (a repeat)');
      this.buffered.delete(call.key);
    }
  }

  private mismatch(identity: CallIdentity, piece: CollectiveMessage): CollectiveMismatchError {
    return new CollectiveMismatchError(
      `process group '${this.group}': rank ${this.rank} is in ${identity.op} #${identity.seq} but rank ${piece.from} ` +
        `sent a piece of ${piece.op} #${piece.seq}: every rank of a group must call the same collectives in the same order`,
    );
  }

  private drop(piece: CollectiveMessage, why: string): void {
    this.dropped += 1;
    this.options.log(
      `process group '${this.group}' rank ${this.rank}: dropped ${piece.op} #${piece.seq} part ${piece.part} from rank ${piece.from}` +
        `${piece.tag === '' ? '' : ` tag ${JSON.stringify(piece.tag)}`}: ${why}`,
    );
  }
}

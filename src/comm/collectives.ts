/**
 * Implements: a process group over the bus (torch.distributed semantics, Megatron usage): tagged
 * point-to-point send/recv, broadcast, all-reduce (sum, mean, max, min), all-gather and barrier.
 *
 * Ranks are global ranks; a group's order is its ranks sorted ascending. Every rank of a group must call
 * its collectives in the same order: each call takes the group's next sequence number, and pieces are
 * matched by (seq, sender, part), so a late or repeated piece can never be mixed into another call, and
 * pieces of a call this rank has not reached yet wait in a buffer. Every wait has a deadline.
 *
 * Determinism: contributions are combined in a fixed order that depends only on the group and the tensor
 * length, never on arrival order, and every rank ends with the same bits.
 * - direct (small tensors): every rank sends its whole tensor to every other rank, and each rank adds
 *   all contributions in rank order: ((x0 + x1) + x2) + ...
 * - ring (large tensors): reduce-scatter then all-gather around the ring of group
 *   order, one chunk per rank (NCCL's ring, moving 2(n-1)/n of the tensor per rank instead of n-1 times
 *   it). Chunk k is summed along the ring starting at rank k: x_k + x_{k+1} + ... (wrapping), so its bits
 *   can differ from the direct order, yet every run and every rank agree. For two ranks both algorithms
 *   give the same bits (one addition is commutative).
 * Tensors above `segmentElements` are all-reduced as independent, concurrent segments (the ring's chunks
 * are then chunks of a segment); the direct order, being element-wise, is unchanged by segmenting.
 * Measured across two processes (40 MB, one NATS server, 2 cores), ring beat direct even for n = 2,
 * where both move the same bytes: its half-size messages let one rank's encoding overlap the other's
 * decoding. Direct wins on small tensors, where ring's 2(n - 1) rounds of latency dominate.
 *
 * A group of one rank returns at once without a message (as Megatron skips collectives there) and hands
 * back the input itself; otherwise results are new arrays (possibly views into received bytes).
 */
import type { Bus } from './bus.ts';
import type { DataPlane } from './data-plane.ts';
import { CollectiveMailbox, type CallIdentity, type OpenCall } from './collective-mailbox.ts';
import type { CollectiveMessage, Message, WireTensor } from '../protocol/messages.ts';
import { checkReduceOp, chunkBounds, combineInto, combineOf, divideInPlace, type ReduceOp, type ReduceValues } from './reduce-ops.ts';
import { fromWireTensor, toWireTensor, type WirePrecision } from './tensor-wire.ts';

export { CollectiveMismatchError, CollectiveTimeoutError } from './collective-mailbox.ts';
export type { ReduceOp } from './reduce-ops.ts';

export type AllReduceAlgorithm = 'direct' | 'ring';

/** Default: two minutes, longer than any pipeline bubble at our sizes, shorter than a human's patience. */
export const DEFAULT_COLLECTIVE_TIMEOUT_MS = 120_000;

/**
 * Direct below this many elements (1 MB of float32). Measured over NATS on 2 cores (2 and 3 processes,
 * 4K-1M elements): medians of the two within noise of each other, so small tensors keep direct's single
 * round of latency, which matters most on a real network.
 */
export const DEFAULT_RING_MIN_ELEMENTS = 256 * 1024;

/** Part numbers that tell apart a barrier's empty pieces from an all-gather's (both travel as all-gather). */
const ALL_GATHER_PART = 0;
const BARRIER_PART = 1;

/**
 * All-reduce splits tensors above this many elements (~16 MB of float32) into segments reduced
 * concurrently: a gradient buffer of a large model then never becomes one message above the bus'
 * maxMessageBytes, and no rank holds several encoded copies of the whole buffer at once. 4096 short of
 * 4 Mi so that a ring piece between two ranks, with its header, fits one message of a private server's
 * 8 MiB max_payload (at exactly 4 Mi every piece went as an 8 MiB chunk and a tiny one, reassembled by
 * a copy: data parallel 2's exposed all-reduce measured 0.198 -> 0.165 of the step).
 */
export const ALL_REDUCE_SEGMENT_ELEMENTS = 4 * 1024 * 1024 - 4096;
/** Part numbers per segment: room for the 2(n - 1) ring steps of groups up to 512 ranks. */
const PARTS_PER_SEGMENT = 1024;

/**
 * At most this many bytes of all-reduce segments in flight towards one rank. nats-server disconnects a
 * client with more than max_pending (64 MiB by default) waiting to be written to it, and a rank still
 * computing, or slower to decode, reads nothing meanwhile: measured on a slower 2-core machine, data
 * parallel 2 with a 100 MB gradient had every segment's reduce-scatter and then its all-gather pieces
 * (up to 100 MB) queued for one rank, the server dropped it as a slow consumer and the other rank waited
 * out its 120 s timeout.
 */
export const ALL_REDUCE_IN_FLIGHT_BYTES = 32 * 1024 * 1024;

/**
 * How many segments of `segmentElements` float32 an all-reduce runs at once, so that what one rank can
 * have queued for it (ring: its left neighbour's 2(n - 1)/n of a segment; direct: every peer's whole
 * segment) stays within ALL_REDUCE_IN_FLIGHT_BYTES. At least one.
 */
export function segmentsInFlight(segmentElements: number, groupSize: number, algorithm: AllReduceAlgorithm, budgetBytes = ALL_REDUCE_IN_FLIGHT_BYTES): number {
  const segmentBytes = 4 * segmentElements;
  const towardsOneRank = algorithm === 'ring' ? (segmentBytes * 2 * (groupSize - 1)) / groupSize : segmentBytes * (groupSize - 1);
  return Math.max(1, Math.floor(budgetBytes / Math.max(towardsOneRank, 1)));
}

/** Where a segment's pieces go: the call, its seq, the first part number of the segment, a label for errors. */
interface SegmentPlace {
  call: OpenCall;
  seq: number;
  partBase: number;
  label: string;
}

const READY_TAG = 'ready';
/** ready(): how long one hello waits for its answer, and the pause before the next. */
const READY_RETRY_MS = 250;
const READY_PAUSE_MS = 50;

/**
 * Direct for small tensors, ring from `ringMinElements` on. A pure function of (length, group size), so
 * every rank picks the same algorithm for the same call.
 */
export function chooseAllReduceAlgorithm(length: number, groupSize: number, ringMinElements = DEFAULT_RING_MIN_ELEMENTS): AllReduceAlgorithm {
  return groupSize >= 2 && length >= ringMinElements ? 'ring' : 'direct';
}

export interface ProcessGroupOptions {
  bus: Bus;
  /** Dot-separated name, unique in the job, e.g. 'world', 'dp.0', 'tp.1'. */
  name: string;
  /** Global ranks of the members; the group's order is these sorted ascending. */
  ranks: number[];
  /** This process' global rank (a member). */
  rank: number;
  /** Deadline of every wait; default DEFAULT_COLLECTIVE_TIMEOUT_MS. */
  timeoutMs?: number;
  /** Forces an all-reduce algorithm for every call (tests, benchmarks); default: by size. */
  allReduceAlgorithm?: AllReduceAlgorithm;
  /** Threshold of `chooseAllReduceAlgorithm`; must be the same on every rank. */
  ringMinElements?: number;
  /** All-reduce segment size (default ALL_REDUCE_SEGMENT_ELEMENTS); must be the same on every rank. */
  segmentElements?: number;
  /** Bytes of all-reduce segments in flight towards one rank (default ALL_REDUCE_IN_FLIGHT_BYTES). */
  allReduceInFlightBytes?: number;
  /**
   * This rank's direct links (data-plane.ts): pieces to a member `ready()` could reach go there, the
   * rest (and everything without one) through the bus. Pieces are taken from both.
   */
  dataPlane?: DataPlane;
  log?: (line: string) => void;
}

export interface AllReduceOptions {
  /** Overrides the group's choice for this call; every rank must pass the same. */
  algorithm?: AllReduceAlgorithm;
  /**
   * The result overwrites `values` (and is returned) instead of a copy: for a caller whose input is
   * scratch, such as a step's flat gradient buffer (100+ MB: the copy and its fresh pages cost 100-300 ms).
   */
  inPlace?: boolean;
}

export interface Received {
  values: Float32Array;
  shape: number[];
}

export class ProcessGroup {
  readonly name: string;
  /** Members, ascending: the order of contributions and of all-gather results. */
  readonly ranks: readonly number[];
  readonly rank: number;
  /** This rank's index in `ranks`. */
  readonly groupRank: number;
  readonly size: number;
  readonly timeoutMs: number;
  private readonly bus: Bus;
  private readonly forcedAlgorithm: AllReduceAlgorithm | undefined;
  private readonly ringMinElements: number;
  private readonly segmentElements: number;
  private readonly allReduceInFlightBytes: number;
  private readonly mailbox: CollectiveMailbox;
  private readonly subscription: { unsubscribe(): void };
  private readonly readySubscription: { unsubscribe(): void };
  private readonly dataPlane: DataPlane | undefined;
  private readonly dataPlaneSubscription: { unsubscribe(): void } | undefined;
  /** Next sequence number of this group's collectives (shared by all ops). */
  private nextSeq = 0;
  /** Per (peer, tag): next seq to send to / expect from it. */
  private readonly sendSeq = new Map<string, number>();
  private readonly recvSeq = new Map<string, number>();
  private closed = false;

  constructor(options: ProcessGroupOptions) {
    const { bus, name, ranks, rank } = options;
    if (!Array.isArray(ranks) || ranks.length === 0) throw new Error(`process group '${name}': ranks must be a non-empty array of global ranks`);
    for (const member of ranks) {
      if (!Number.isSafeInteger(member) || member < 0) throw new Error(`process group '${name}': rank ${member} in ranks [${ranks.join(', ')}] is not a non-negative integer`);
    }
    const sorted = [...ranks].sort((a, b) => a - b);
    for (let i = 1; i < sorted.length; i++) {
      if (sorted[i] === sorted[i - 1]) throw new Error(`process group '${name}': rank ${sorted[i]} appears twice in ranks [${ranks.join(', ')}]`);
    }
    const groupRank = sorted.indexOf(rank);
    if (groupRank < 0) throw new Error(`process group '${name}': this process' rank ${rank} is not a member of [${sorted.join(', ')}]`);
    const timeoutMs = options.timeoutMs ?? DEFAULT_COLLECTIVE_TIMEOUT_MS;
    if (!(timeoutMs > 0)) throw new Error(`process group '${name}': timeoutMs must be positive, got ${timeoutMs}`);
    this.bus = bus;
    this.name = name;
    this.ranks = Object.freeze(sorted);
    this.rank = rank;
    this.groupRank = groupRank;
    this.size = sorted.length;
    this.timeoutMs = timeoutMs;
    this.forcedAlgorithm = options.allReduceAlgorithm;
    this.ringMinElements = options.ringMinElements ?? DEFAULT_RING_MIN_ELEMENTS;
    this.segmentElements = options.segmentElements ?? ALL_REDUCE_SEGMENT_ELEMENTS;
    this.allReduceInFlightBytes = options.allReduceInFlightBytes ?? ALL_REDUCE_IN_FLIGHT_BYTES;
    if (!Number.isSafeInteger(this.segmentElements) || this.segmentElements < 1) {
      throw new Error(`process group '${name}': segmentElements must be a positive integer, got ${options.segmentElements}`);
    }
    const log = options.log ?? ((line: string) => process.stderr.write(line + '\n'));
    this.mailbox = new CollectiveMailbox({ group: name, rank, log, isSpent: (piece) => this.isSpent(piece) });
    // A group of one never messages, except send/recv to itself; subscribe anyway so that works.
    const onPiece = (message: Message) => {
      if (message.kind !== 'collective') {
        log(`process group '${name}' rank ${rank}: dropped a '${message.kind}' message on its collective subject`);
        this.mailbox.dropped += 1;
      } else if (message.group !== name || !this.ranks.includes(message.from)) {
        log(`process group '${name}' rank ${rank}: dropped a piece for group '${message.group}' from rank ${message.from}: not this group or not a member`);
        this.mailbox.dropped += 1;
      } else {
        this.mailbox.deliver(message);
      }
    };
    this.subscription = bus.subscribe(this.inboxSubject(rank), onPiece);
    this.dataPlane = options.dataPlane;
    this.dataPlaneSubscription = options.dataPlane?.subscribe(this.inboxSubject(rank), onPiece);
    // Subscribed after the pieces' subject: an answered hello then proves both subscriptions exist.
    this.readySubscription = bus.subscribe(this.readySubject(rank), (message, context) => {
      if (message.kind === 'collective' && message.tag === READY_TAG && context.reply !== undefined) {
        bus.respond(context, { ...message, from: rank });
      }
    });
  }

  /**
   * Resolves once every member has subscribed to this group's subjects. A publish that reaches a NATS
   * subject nobody listens on yet is lost, so every rank calls this once after making the group and
   * before its first send or collective. Rejects after `timeoutMs` naming the members that never answered.
   */
  async ready(timeoutMs = this.timeoutMs): Promise<void> {
    this.checkOpen();
    const deadline = Date.now() + timeoutMs;
    const silent = new Set(this.ranks.filter((member) => member !== this.rank));
    const hello: CollectiveMessage = { kind: 'collective', group: this.name, op: 'broadcast', seq: 0, tag: READY_TAG, from: this.rank, part: 0, tensor: toWireTensor(new Float32Array(0), [0]) };
    await Promise.all(
      [...silent].map(async (member) => {
        while (Date.now() < deadline) {
          try {
            await this.bus.request(this.readySubject(member), hello, Math.max(1, Math.min(READY_RETRY_MS, deadline - Date.now())));
            silent.delete(member);
            return;
          } catch {
            // Not subscribed yet (no responders, or no answer): try again until the deadline.
            await new Promise((resolve) => setTimeout(resolve, Math.min(READY_PAUSE_MS, Math.max(0, deadline - Date.now()))));
          }
        }
      }),
    );
    if (silent.size > 0) {
      const missing = [...silent].sort((a, b) => a - b);
      throw new Error(
        `process group '${this.name}' (rank ${this.rank}): rank${missing.length === 1 ? '' : 's'} ${missing.join(', ')} did not join within ${timeoutMs} ms: ` +
          'check that every member process is running and creates this group',
      );
    }
    // Every member listens: dial the direct links (a member that cannot be reached stays on the bus).
    const dataPlane = this.dataPlane;
    if (dataPlane !== undefined) await Promise.all(this.ranks.filter((member) => member !== this.rank).map((member) => dataPlane.connect(member)));
  }

  /** Pieces dropped as late, repeated, foreign or mismatched since the group was made. */
  get droppedPieces(): number {
    return this.mailbox.dropped;
  }

  /** Where `rank` answers `ready()` requests (its own prefix: a group name may contain dots). */
  private readySubject(rank: number): string {
    return `coll-ready.${this.name}.${rank}`;
  }

  /** The bus subject (relative to the job) where `rank` receives this group's pieces. */
  inboxSubject(rank: number): string {
    return `coll.${this.name}.${rank}`;
  }

  /** `precision`: float16 or bfloat16 travel in half the bytes, at that precision; recv returns float32 either way. */
  send(to: number, tag: string, values: Float32Array, shape: number[] = [values.length], options: { precision?: WirePrecision } = {}): void {
    this.checkOpen();
    this.checkMember(to, 'send to');
    const stream = JSON.stringify([to, tag]);
    const seq = this.sendSeq.get(stream) ?? 0;
    this.sendSeq.set(stream, seq + 1);
    this.publish(to, { op: 'send', seq, tag, part: 0 }, toWireTensor(values, shape, options));
  }

  async recv(from: number, tag: string): Promise<Received> {
    this.checkOpen();
    this.checkMember(from, 'recv from');
    const stream = JSON.stringify([from, tag]);
    const seq = this.recvSeq.get(stream) ?? 0;
    this.recvSeq.set(stream, seq + 1);
    const call = this.mailbox.openCall({ op: 'send', seq, tag, stream: from }, this.timeoutMs, `recv from rank ${from} tag ${JSON.stringify(tag)}`);
    try {
      const piece = await call.take(from, 0);
      return { values: this.float32Of(piece, `recv from rank ${from} tag ${JSON.stringify(tag)}`), shape: piece.tensor.shape };
    } finally {
      call.close();
    }
  }

  /** Root passes the values; the others may pass undefined (or a buffer of the same length, checked). */
  async broadcast(values: Float32Array | undefined, root: number): Promise<Float32Array> {
    this.checkOpen();
    this.checkMember(root, 'broadcast from');
    if (this.rank === root && values === undefined) throw new Error(`process group '${this.name}': broadcast root ${root} must pass the values to send`);
    if (this.size === 1) return values as Float32Array;
    return this.run('broadcast', async (call, seq) => {
      if (this.rank === root) {
        const wire = toWireTensor(values as Float32Array, [(values as Float32Array).length]);
        for (const member of this.ranks) if (member !== root) this.publish(member, { op: 'broadcast', seq, tag: '', part: 0 }, wire);
        return values as Float32Array;
      }
      const received = this.float32Of(await call.take(root, 0), `broadcast #${seq} from rank ${root}`);
      if (values !== undefined && values.length !== received.length) {
        throw new Error(`process group '${this.name}': broadcast #${seq} from rank ${root} sent ${received.length} values, rank ${this.rank} expected ${values.length}`);
      }
      return received;
    });
  }

  /** Every member's values in group order (lengths may differ); this rank's entry is its input. */
  async allGather(values: Float32Array): Promise<Float32Array[]> {
    this.checkOpen();
    if (this.size === 1) return [values];
    return this.run('all-gather', async (call, seq) => {
      const wire = toWireTensor(values, [values.length]);
      for (const member of this.ranks) if (member !== this.rank) this.publish(member, { op: 'all-gather', seq, tag: '', part: ALL_GATHER_PART }, wire);
      return Promise.all(
        this.ranks.map(async (member) =>
          member === this.rank ? values : this.float32Of(await call.take(member, ALL_GATHER_PART), `all-gather #${seq} from rank ${member}`),
        ),
      );
    });
  }

  async barrier(): Promise<void> {
    this.checkOpen();
    if (this.size === 1) return;
    await this.run('barrier', async (call, seq) => {
      const empty = toWireTensor(new Float32Array(0), [0]);
      for (const member of this.ranks) if (member !== this.rank) this.publish(member, { op: 'all-gather', seq, tag: '', part: BARRIER_PART }, empty);
      await Promise.all(this.ranks.filter((member) => member !== this.rank).map((member) => call.take(member, BARRIER_PART)));
    });
  }

  allReduce(values: Float32Array, op: ReduceOp, options?: AllReduceOptions): Promise<Float32Array>;
  allReduce(values: Int32Array, op: Exclude<ReduceOp, 'mean'>, options?: AllReduceOptions): Promise<Int32Array>;
  async allReduce(values: ReduceValues, op: ReduceOp, options: AllReduceOptions = {}): Promise<ReduceValues> {
    this.checkOpen();
    checkReduceOp(op, values);
    if (this.size === 1) return values;
    const algorithm = options.algorithm ?? this.forcedAlgorithm ?? chooseAllReduceAlgorithm(values.length, this.size, this.ringMinElements);
    if (algorithm !== 'direct' && algorithm !== 'ring') throw new Error(`unknown all-reduce algorithm ${JSON.stringify(algorithm)}: use 'direct' or 'ring'`);
    if (algorithm === 'ring' && 2 * this.size > PARTS_PER_SEGMENT) {
      throw new Error(`process group '${this.name}': ring all-reduce supports up to ${PARTS_PER_SEGMENT / 2} ranks, this group has ${this.size}: use 'direct'`);
    }
    const segmentElements = this.segmentElements;
    return this.run('all-reduce', async (call, seq) => {
      // Segments reduce independently, a few at a time (segmentsInFlight), each with its own part
      // numbers; the result is assembled in place, so no message (and no copy of one) is larger than a
      // segment. Not in place, the input is read where it is and every result chunk written once (a copy
      // of the input first cost 10-20 ms and 40 MB of fresh pages for 10M floats).
      const result = options.inPlace === true ? values : new (values.constructor as Float32ArrayConstructor | Int32ArrayConstructor)(values.length);
      const count = Math.max(1, Math.ceil(values.length / segmentElements));
      const reduceSegment = (segment: number): Promise<void> => {
        const start = segment * segmentElements;
        const end = Math.min(values.length, start + segmentElements);
        const input = values.subarray(start, end);
        const output = result.subarray(start, end);
        const label = values.length > segmentElements ? ` segment ${segment}` : '';
        const where: SegmentPlace = { call, seq, partBase: segment * PARTS_PER_SEGMENT, label };
        return algorithm === 'direct' ? this.allReduceDirect(input, output, op, where) : this.allReduceRing(input, output, op, where);
      };
      // A rank starts another segment only when one of its own is done, which needs its peers' pieces of
      // it: no peer gets more than a window ahead of what this rank has read.
      let next = 0;
      const lane = async (): Promise<void> => {
        while (next < count) await reduceSegment(next++);
      };
      await Promise.all(Array.from({ length: Math.min(count, segmentsInFlight(segmentElements, this.size, algorithm, this.allReduceInFlightBytes)) }, lane));
      return result;
    });
  }

  /** Unsubscribes and fails every wait in progress; later calls throw. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.subscription.unsubscribe();
    this.readySubscription.unsubscribe();
    this.dataPlaneSubscription?.unsubscribe();
    this.mailbox.failAll(new Error(`process group '${this.name}' was closed on rank ${this.rank} while a call was waiting`));
  }

  /** `input`: this rank's values; `output` (a view of the same memory when in place) receives the result. */
  private async allReduceDirect(input: ReduceValues, output: ReduceValues, op: ReduceOp, where: SegmentPlace): Promise<void> {
    const { call, seq, partBase, label } = where;
    // Copied into each frame: `input` may be `output`, which the sums below overwrite.
    const wire = toWireTensor(input, [input.length]);
    for (const member of this.ranks) if (member !== this.rank) this.publish(member, { op: 'all-reduce', seq, tag: '', part: partBase }, wire);
    // In place, this rank's own values must outlive the first sums when they come third or later.
    const own = input.buffer === output.buffer && this.groupRank >= 2 ? input.slice() : input;
    const pieces: (CollectiveMessage | undefined)[] = [];
    const contributions = await Promise.all(
      this.ranks.map(async (member, index) => {
        if (member === this.rank) return own;
        const piece = await call.take(member, partBase);
        pieces[index] = piece;
        return this.valuesOf(piece, input, `all-reduce #${seq}${label} from rank ${member}`);
      }),
    );
    // Rank order, whatever the arrival order: result = ((x0 + x1) + x2) + ...
    const combineOp = op === 'mean' ? 'sum' : op;
    combineOf(output, 0, contributions[1]!, contributions[0]!, combineOp);
    for (let i = 2; i < contributions.length; i++) combineInto(output, 0, contributions[i]!, combineOp);
    if (op === 'mean') divideInPlace(output, 0, output.length, this.size);
    for (const piece of pieces) if (piece !== undefined) this.release(piece);
  }

  /**
   * `input`: this rank's values; `output` (a view of the same memory when in place) receives the result. Chunks go
   * out without a copy (the data plane writes them from where they are), so before this rank overwrites
   * a chunk it sent, that send must have been written.
   */
  private async allReduceRing(input: ReduceValues, output: ReduceValues, op: ReduceOp, where: SegmentPlace): Promise<void> {
    const { call, seq, partBase, label } = where;
    const n = this.size;
    const me = this.groupRank;
    const right = this.ranks[(me + 1) % n];
    const left = this.ranks[(me + n - 1) % n];
    const chunkOf = (chunk: number) => ((chunk % n) + n) % n;
    const bounds = (chunk: number) => chunkBounds(output.length, n, chunkOf(chunk));
    const combineOp = op === 'mean' ? 'sum' : op;
    const sending = new Map<number, Promise<void>>();
    const send = (chunk: number, from: ReduceValues, part: number) => {
      const [start, end] = bounds(chunk);
      sending.set(chunkOf(chunk), this.publish(right, { op: 'all-reduce', seq, tag: '', part }, toWireTensor(from.subarray(start, end), [end - start]), { borrowed: true }));
    };
    // Reduce-scatter: at step s, pass chunk (me - s) on and add own values into chunk (me - s - 1). The
    // first chunk passed on is this rank's input; the others are partial sums in the output.
    for (let step = 0; step < n - 1; step++) {
      send(me - step, step === 0 ? input : output, partBase + 1 + step);
      const [start, end] = bounds(me - step - 1);
      const piece = await call.take(left, partBase + 1 + step);
      const incoming = this.valuesOf(piece, output.subarray(start, end), `all-reduce #${seq}${label} ring step ${step} from rank ${left}`);
      await sending.get(chunkOf(me - step - 1));
      combineOf(output, start, incoming, input.subarray(start, end), combineOp);
      this.release(piece);
    }
    const [ownStart, ownEnd] = bounds(me + 1);
    if (op === 'mean') divideInPlace(output, ownStart, ownEnd, n);
    // All-gather: pass on the finished chunk received last, starting with the one this rank finished.
    for (let step = 0; step < n - 1; step++) {
      send(me + 1 - step, output, partBase + n + step);
      const [start, end] = bounds(me - step);
      const piece = await call.take(left, partBase + n + step);
      const incoming = this.valuesOf(piece, output.subarray(start, end), `all-reduce #${seq}${label} ring gather ${step} from rank ${left}`);
      await sending.get(chunkOf(me - step));
      output.set(incoming, start);
      this.release(piece);
    }
    // The caller may change its buffers once this resolves.
    await Promise.all(sending.values());
  }

  /** Opens the next collective of the group, runs it, and always closes it. */
  private async run<T>(op: 'broadcast' | 'all-gather' | 'all-reduce' | 'barrier', body: (call: OpenCall, seq: number) => Promise<T>): Promise<T> {
    const seq = this.nextSeq++;
    const identity: CallIdentity = { op: op === 'barrier' ? 'all-gather' : op, seq, tag: '' };
    const call = this.mailbox.openCall(identity, this.timeoutMs, op);
    try {
      return await body(call, seq);
    } finally {
      call.close();
    }
  }

  private isSpent(piece: CollectiveMessage): boolean {
    if (piece.op === 'send') return piece.seq < (this.recvSeq.get(JSON.stringify([piece.from, piece.tag])) ?? 0);
    return piece.seq < this.nextSeq;
  }

  /**
   * Resolves once the tensor's bytes are no longer needed: at once through the bus (it encodes a copy),
   * once written on a direct link. `borrowed`: the data plane writes them from where they are.
   */
  private publish(to: number, fields: Pick<CollectiveMessage, 'op' | 'seq' | 'tag' | 'part'>, tensor: WireTensor, options: { borrowed?: boolean } = {}): Promise<void> {
    const message: CollectiveMessage = { kind: 'collective', group: this.name, from: this.rank, ...fields, tensor };
    const written = this.dataPlane?.send(to, this.inboxSubject(to), message, options);
    if (written !== undefined) return written;
    this.bus.publish(this.inboxSubject(to), message);
    return Promise.resolve();
  }

  /** A piece whose values were consumed (summed or copied out): its receive buffer may serve again. */
  private release(piece: CollectiveMessage): void {
    this.dataPlane?.release(piece.tensor.data);
  }

  private float32Of(piece: CollectiveMessage, what: string): Float32Array {
    const values = fromWireTensor(piece.tensor);
    if (!(values instanceof Float32Array)) throw new Error(`process group '${this.name}': ${what} carried ${piece.tensor.dtype} values, expected float32`);
    return values;
  }

  /** The piece's values, checked against the dtype and length this rank expects in that place. */
  private valuesOf(piece: CollectiveMessage, like: ReduceValues, what: string): ReduceValues {
    const values = fromWireTensor(piece.tensor);
    if (values.constructor !== like.constructor || values.length !== like.length) {
      const want = `${like.length} ${like instanceof Float32Array ? 'float32' : 'int32'}`;
      throw new Error(
        `process group '${this.name}': ${what} carried ${values.length} ${piece.tensor.dtype} values where rank ${this.rank} has ${want}: ` +
          'every rank must all-reduce tensors of the same length and dtype',
      );
    }
    return values;
  }

  private checkMember(rank: number, what: string): void {
    if (!this.ranks.includes(rank)) throw new Error(`process group '${this.name}': cannot ${what} rank ${rank}, not a member of [${this.ranks.join(', ')}]`);
  }

  private checkOpen(): void {
    if (this.closed) throw new Error(`process group '${this.name}' on rank ${this.rank} is closed: make a new one`);
  }
}

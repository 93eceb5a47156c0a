/**
 * Implements: tied parameters held by several ranks (the seed's PipelineSharedModuleWrapper; Megatron's
 * embedding group): the word embedding of the first pipeline stage and the LM head of the last. Each
 * registered group of ranks and parameter names gets identical initial values (a broadcast from the
 * group's first rank) and, every step before the optimizer, the sum of all its copies' gradients, so the
 * copies stay bit-identical. Several groups can coexist; a group of one rank does nothing.
 *
 * [Note: the tied gradient's sum] Not an all-reduce: each member sends its contribution to every other
 * member point-to-point, and each adds them all in group order with the direct all-reduce's bits
 * (contributions.ts). A copy whose gradient is exactly +0 outside some rows (the first stage's word
 * embedding: a scatter-add at this step's token ids, a few hundred of 50304 rows) sends only those rows;
 * the others send all of it, straight from the backend's memory, with the places where it holds -0. For
 * the embedding group that turns a ring all-reduce of 51 MB into 51 MB one way and a few hundred rows
 * the other. And a member may start as soon as its gradients are final (`startReduction`: the last
 * stage right after its last backward, while the first stage still runs its own), so the big transfer
 * overlaps that backward, and the first stage, last to finish, only adds its rows to what arrived.
 *
 * [Note: sent before the peer reads] A busy peer reads nothing (tfjs compute is synchronous), so what is
 * sent to it early waits in the NATS server, which cuts a connection holding more than its max_pending
 * (64 MiB by default). So a whole-gradient contribution goes in pieces, at most `earlyElements` of them
 * before the peer says it is reading (on entering `reduceGradients`), the rest after.
 */
import type { ProcessGroup } from '../comm/collectives.ts';
import { readRows, readTensor, readTensorCopy, withValues } from '../backend/tensor-view.ts';
import { wallClockMs, type TraceRecorder } from '../trace/trace.ts';
import * as tf from '../tf.ts';
import { negativeZerosOf, packIndices, packRows, rowsAreSmaller, sumInGroupOrder, sumRowsAndWhole, unpackIndices, unpackRows, type Contribution } from './contributions.ts';

/** 48 MiB of float32 before the peer reads: below nats-server's default max_pending (64 MiB), with room for activations that travel meanwhile. */
export const EARLY_ELEMENTS = 12 * 1024 * 1024;
/**
 * Pieces of a whole-gradient contribution: just under 8 MiB with their header, so that each is one
 * message on a private server (8 MiB max_payload) instead of a 48 MiB piece sent as six chunks and
 * reassembled by a copy on arrival. Measured on pipeline 2 (the 51 MB tied LM-head gradient): the first
 * stage's receive after its last backward 276-300 -> 205-226 ms, the step 6405-6539 -> 6246-6363 ms.
 */
export const PIECE_ELEMENTS = 2 * 1024 * 1024 - 2048;

const READING_TAG = 'reading';
/** Where a whole contribution held -0 (see contributions.ts). */
const ZEROS_TAG = 'zeros';
const partTag = (index: number) => `part.${index}`;

export interface SharedWeightsOptions {
  /** Values of a whole-gradient contribution sent to a peer before it is reading; default EARLY_ELEMENTS. */
  earlyElements?: number;
  /** Values per piece of a whole-gradient contribution; default PIECE_ELEMENTS. */
  pieceElements?: number;
}

export interface ReductionOptions {
  /**
   * For a parameter (a 2-D one, alone in its group): the rows outside which this rank's gradient is
   * exactly +0, ascending and distinct, or undefined (all rows). Asked when the contribution starts; only
   * those rows are sent when that is fewer values.
   */
  rowsTouched?: (name: string) => Int32Array | undefined;
  /** Where 'send tied gradient' and 'receive tied gradient' events go. */
  trace?: TraceRecorder;
  /** 0-based step, for the events. */
  step?: number;
}

interface SharedGroup {
  group: ProcessGroup;
  names: string[];
}

/** A group's reduction once this rank has sent its contribution. */
interface Started {
  own: Contribution;
  /** Elements of the flattened parameters, and their columns when the group ties one 2-D parameter. */
  length: number;
  cols?: number;
  /** Pieces of a whole-gradient contribution not sent yet (by part index): they go once each peer reads. */
  late: Map<number, Float32Array>;
}

export class SharedWeights {
  private readonly groups: SharedGroup[] = [];
  private readonly started = new Map<SharedGroup, Promise<Started>>();
  private readonly earlyElements: number;
  private readonly pieceElements: number;

  constructor(options: SharedWeightsOptions = {}) {
    this.pieceElements = options.pieceElements ?? PIECE_ELEMENTS;
    this.earlyElements = options.earlyElements ?? EARLY_ELEMENTS;
    if (!(Number.isInteger(this.pieceElements) && this.pieceElements > 0)) throw new Error(`shared weights: pieceElements must be a positive integer, got ${this.pieceElements}`);
  }

  /** Every registered parameter name. */
  get parameterNames(): string[] {
    return [...new Set(this.groups.flatMap((shared) => shared.names))];
  }

  register(group: ProcessGroup, names: string[]): void {
    if (names.length === 0) throw new Error(`shared weights of group ${group.name}: no parameter names given`);
    this.groups.push({ group, names: [...names] });
  }

  /** Makes every copy equal to the first rank's (they already are when initialized from the same seed). */
  async synchronizeValues(params: Map<string, tf.Variable>): Promise<void> {
    for (const { group, names } of this.groups) {
      if (group.size === 1) continue;
      const flat = await flatten(names.map((name) => requireTensor(params, name, group)));
      const root = group.ranks[0];
      const values = await group.broadcast(group.rank === root ? flat : undefined, root);
      unflatten(names, values, (name, tensor) => {
        params.get(name)!.assign(tensor);
        tensor.dispose();
      }, params);
    }
  }

  /**
   * Sends this rank's contribution to every group not started yet in this step. Call it once the
   * registered gradients are final; `reduceGradients` then finishes.
   */
  startReduction(grads: Map<string, tf.Tensor>, options: ReductionOptions = {}): void {
    for (const shared of this.groups) {
      if (shared.group.size > 1 && !this.started.has(shared)) {
        const started = this.start(shared, grads, options);
        // Awaited by reduceGradients; a step that fails before then must not leave it unhandled.
        started.catch(() => {});
        this.started.set(shared, started);
      }
    }
  }

  /** Replaces each registered gradient by the sum over the group's copies (starting first where `startReduction` did not). */
  async reduceGradients(grads: Map<string, tf.Tensor>, options: ReductionOptions = {}): Promise<void> {
    try {
      this.startReduction(grads, options);
      for (const shared of this.groups) {
        const started = this.started.get(shared);
        if (started !== undefined) await this.finish(shared, await started, grads, options);
      }
    } finally {
      this.started.clear();
    }
  }

  private async start({ group, names }: SharedGroup, grads: Map<string, tf.Tensor>, options: ReductionOptions): Promise<Started> {
    const begin = wallClockMs();
    const tensors = names.map((name) => requireTensor(grads, name, group));
    const length = tensors.reduce((n, t) => n + t.size, 0);
    const cols = names.length === 1 && tensors[0].rank === 2 ? tensors[0].shape[1] : undefined;
    const rows = cols === undefined ? undefined : options.rowsTouched?.(names[0]);
    const peers = group.ranks.filter((member) => member !== group.rank);
    const send = (tag: string, values: Float32Array, shape?: number[]) => {
      for (const peer of peers) group.send(peer, tag, values, shape);
    };
    let started: Started;
    if (rows !== undefined && rowsAreSmaller(rows.length, cols!, length)) {
      const values = await readRows(tensors[0], rows);
      const packed = packRows(rows, values, cols!);
      send(partTag(0), packed.values, packed.shape);
      started = { own: { kind: 'rows', rows, values, cols: cols! }, length, cols, late: new Map() };
    } else {
      // One tensor goes out straight from the backend's memory; this rank's own copy is made in `finish`.
      const flat = tensors.length === 1 ? undefined : await flatten(names.map((name) => requireTensor(grads, name, group)));
      const late = new Map<number, Float32Array>();
      const sendPieces = (values: Float32Array) => {
        for (let index = 0, offset = 0; offset < length || index === 0; index++, offset += this.pieceElements) {
          const piece = values.subarray(offset, Math.min(length, offset + this.pieceElements));
          // The first piece always goes now: it tells the peer which kind of contribution this is.
          if (index > 0 && offset + piece.length > this.earlyElements) late.set(index, flat === undefined ? piece.slice() : piece);
          else send(partTag(index), piece);
        }
      };
      if (flat === undefined) await withValues(tensors[0], sendPieces);
      else sendPieces(flat);
      started = { own: { kind: 'whole', pieces: flat === undefined ? [] : [flat], negativeZeros: [] }, length, cols, late };
    }
    options.trace?.record('send tied gradient', 'comm', begin, wallClockMs(), { ...stepArgs(options), to: peersArg(peers) });
    return started;
  }

  private async finish({ group, names }: SharedGroup, started: Started, grads: Map<string, tf.Tensor>, options: ReductionOptions): Promise<void> {
    const begin = wallClockMs();
    const peers = group.ranks.filter((member) => member !== group.rank);
    if (started.own.kind === 'whole') {
      // This rank overwrites its copy with the sum; finding its -0 places waits till the values are on their way.
      if (started.own.pieces.length === 0) started.own.pieces = [await readTensorCopy(requireTensor(grads, names[0], group))];
      started.own.negativeZeros = negativeZerosOf(started.own.pieces[0]);
      const zeros = packIndices(started.own.negativeZeros);
      for (const peer of peers) group.send(peer, ZEROS_TAG, zeros.values, zeros.shape);
    }
    for (const peer of peers) group.send(peer, READING_TAG, new Float32Array(0), [0]);
    for (const peer of peers) {
      await this.receive(group, peer, READING_TAG);
      for (const [index, piece] of started.late) group.send(peer, partTag(index), piece);
    }
    const contributions = await Promise.all(group.ranks.map((member) => (member === group.rank ? started.own : this.contributionOf(group, member, started))));
    const [rows, whole] = [contributions.find((c) => c.kind === 'rows'), contributions.find((c) => c.kind === 'whole')];
    // Received values are this rank's to overwrite, and so is its own whole contribution (a copy).
    const pieces =
      contributions.length === 2 && rows?.kind === 'rows' && whole?.kind === 'whole' ? sumRowsAndWhole(rows, whole, started.length) : [sumInGroupOrder(contributions, started.length)];
    const put = (name: string, tensor: tf.Tensor) => {
      grads.get(name)!.dispose();
      grads.set(name, tensor);
    };
    // One parameter in several pieces: joined by the backend (one copy there, none here).
    if (pieces.length > 1) put(names[0], tf.tidy(() => tf.reshape(tf.concat(pieces.map((piece) => tf.tensor1d(piece))), grads.get(names[0])!.shape)));
    else unflatten(names, pieces[0], put, grads);
    options.trace?.record('receive tied gradient', 'comm', begin, wallClockMs(), { ...stepArgs(options), from: peersArg(peers) });
  }

  /** A peer's contribution: its rows (a 2-D first part), or its whole gradient in as many parts as it takes. */
  private async contributionOf(group: ProcessGroup, member: number, started: Started): Promise<Contribution> {
    const from = `rank ${member} in group ${group.name}`;
    const first = await this.receive(group, member, partTag(0));
    if (first.shape.length === 2) {
      if (started.cols === undefined) throw new Error(`shared weights of group ${group.name}: rank ${member} sent gradient rows, but rank ${group.rank} ties no single 2-D parameter there`);
      return unpackRows(first.values, first.shape, started.length, started.cols, from);
    }
    const pieces = [first.values];
    let received = first.values.length;
    for (let index = 1; received < started.length; index++) {
      const piece = (await this.receive(group, member, partTag(index))).values;
      pieces.push(piece);
      received += piece.length;
    }
    if (received !== started.length) {
      throw new Error(`shared weights of group ${group.name}: rank ${member} sent ${received} gradient values, rank ${group.rank} holds ${started.length}: every member must hold the same parameters`);
    }
    const zeros = await this.receive(group, member, ZEROS_TAG);
    return { kind: 'whole', pieces, negativeZeros: unpackIndices(zeros.values, zeros.shape, started.length, from) };
  }

  private async receive(group: ProcessGroup, member: number, tag: string): Promise<{ values: Float32Array; shape: number[] }> {
    try {
      return await group.recv(member, tag);
    } catch (error) {
      throw new Error(`shared weights of group ${group.name}: rank ${group.rank} got no tied gradient (${tag}) from rank ${member}: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
}

function stepArgs(options: ReductionOptions): Record<string, number> {
  return options.step === undefined ? {} : { step: options.step + 1 };
}

/** The peer of a two-member group as a number (the trace pairs sends with receives by it), else the list. */
function peersArg(peers: number[]): number | string {
  return peers.length === 1 ? peers[0] : peers.join(',');
}

function requireTensor<T extends tf.Tensor>(map: Map<string, T>, name: string, group: ProcessGroup): T {
  const tensor = map.get(name);
  if (tensor === undefined) throw new Error(`shared parameter ${name} of group ${group.name} is not held by rank ${group.rank}`);
  return tensor;
}

async function flatten(tensors: tf.Tensor[]): Promise<Float32Array> {
  const flat = new Float32Array(tensors.reduce((n, t) => n + t.size, 0));
  let offset = 0;
  for (const tensor of tensors) {
    flat.set(await readTensor(tensor), offset);
    offset += tensor.size;
  }
  return flat;
}

function unflatten(names: string[], flat: Float32Array, put: (name: string, tensor: tf.Tensor) => void, shapes: Map<string, tf.Tensor>): void {
  let offset = 0;
  for (const name of names) {
    const like = shapes.get(name)!;
    put(name, tf.tensor(flat.subarray(offset, offset + like.size), like.shape, 'float32'));
    offset += like.size;
  }
}

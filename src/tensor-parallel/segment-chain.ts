/**
 * Implements: a tensor-parallel model slice's compute as a CHAIN OF LOCAL SEGMENTS with collectives
 * between them (ARCHITECTURE.md, "Compute"): forward runs segment, collective, segment ...; backward
 * walks the chain in reverse, taking each segment's vector-Jacobian product by recompute and doing the
 * conjugate collective in between.
 *
 * [Note: live tensors] Between segments the chain carries a short list of tensors: [0] is the tensor the
 * next segment works on, the rest ride along (the residual stream). A `replicated` segment maps the
 * whole list to a new list; a `parallel` segment maps only [0] and passes the rest through untouched.
 *
 * [Note: which gradients are partial] Megatron's f/g operators, placed by the segment kinds:
 * - A `parallel` segment reads a REPLICATED input (a LayerNorm's output) and uses only this rank's
 *   heads, columns or vocabulary rows of it, so the input gradient its VJP returns is this rank's part of
 *   a sum: it is all-reduced before anything else sees it (f: identity forward, all-reduce backward).
 *   Its own parameters' gradients are complete for the shard it holds: no reduction.
 * - With `reduceOutput`, a `parallel` segment's output is a partial sum all-reduced forward (g); the
 *   gradient of the sum is the gradient of every partial, so backward passes it on unchanged.
 * - A `replicated` segment runs on every tp rank with bit-identical inputs (the all-reduce hands every
 *   rank the same bits) and, backward, bit-identical output gradients (the all-reduced ones), so its
 *   input AND parameter gradients come out bit-identical on every rank: LayerNorms, the position
 *   embedding and the row-parallel biases need no all-reduce (as in Megatron without sequence
 *   parallelism). The LayerNorms sit in replicated segments, before the f boundary, for exactly this.
 */
import { addGradient } from '../model/gradient-sum.ts';
import * as tf from '../tf.ts';

/** The part of a process group this chain needs; ProcessGroup satisfies it. */
export interface TensorParallelGroup {
  readonly size: number;
  /** This rank's index in the group (0..size-1): which shard it holds. */
  readonly groupRank: number;
  allReduce(values: Float32Array, op: 'sum' | 'max'): Promise<Float32Array>;
}

export interface ReplicatedSegment {
  kind: 'replicated';
  name: string;
  /** Parameter names this segment reads (their gradients come out of its VJP). */
  params: string[];
  run(live: tf.Tensor[]): tf.Tensor[];
}

export interface ParallelSegment {
  kind: 'parallel';
  name: string;
  params: string[];
  /** Reads live[0] (undefined at the start of a chain that begins with token ids) and returns the new live[0]. */
  run(input: tf.Tensor | undefined): tf.Tensor;
  /** All-reduce (sum) the output forward: it is a row-parallel partial sum. */
  reduceOutput: boolean;
}

export type Segment = ReplicatedSegment | ParallelSegment;

/** What a forward keeps for its backward: each segment's inputs (the boundary tensors, not the insides). */
export interface ChainRecord {
  segments: Segment[];
  /** inputs[i]: the live list segment i read. */
  inputs: tf.Tensor[][];
  output: tf.Tensor[];
  /** Tensors the chain created (everything live except the caller's initial tensors). */
  owned: Set<tf.Tensor>;
}

/** Sum- or max-all-reduces a tensor over the group; returns a new tensor (the caller disposes both). */
export async function allReduceTensor(group: TensorParallelGroup, tensor: tf.Tensor, op: 'sum' | 'max'): Promise<tf.Tensor> {
  if (group.size === 1) return tf.clone(tensor);
  const reduced = await group.allReduce(tensor.dataSync() as Float32Array, op);
  return tf.tensor(reduced, tensor.shape, 'float32');
}

export async function runChainForward(group: TensorParallelGroup, segments: Segment[], initial: tf.Tensor[]): Promise<ChainRecord> {
  const callers = new Set(initial);
  const owned = new Set<tf.Tensor>();
  const adopt = (tensors: tf.Tensor[]) => tensors.forEach((t) => !callers.has(t) && owned.add(t));
  const inputs: tf.Tensor[][] = [];
  let live = initial;
  const record: ChainRecord = { segments, inputs, output: live, owned };
  try {
    for (const segment of segments) {
      inputs.push(live);
      if (segment.kind === 'replicated') {
        live = tf.tidy(() => segment.run(live));
      } else {
        let out = tf.tidy(() => segment.run(live[0]));
        if (segment.reduceOutput) {
          const partial = out;
          try {
            out = await allReduceTensor(group, partial, 'sum');
          } finally {
            partial.dispose();
          }
        }
        live = [out, ...live.slice(1)];
      }
      adopt(live);
    }
  } catch (error) {
    // A failed collective (a peer gone, a timeout) must not leave this micro-batch's tensors behind.
    releaseRecord(record);
    throw inSegment(error, 'forward', segments[inputs.length - 1], group);
  }
  record.output = live;
  return record;
}

/** Gradients of one backward: of the chain's initial tensors (in order) and of the parameters by name. */
export interface ChainGradients {
  inputGrads: (tf.Tensor | undefined)[];
  paramGrads: Map<string, tf.Tensor>;
}

/**
 * The backward of a recorded forward, seeded with the gradients of its output list (undefined: that
 * output does not reach the loss). Disposes the record's tensors. `params` resolves parameter names.
 */
export async function runChainBackward(
  group: TensorParallelGroup,
  record: ChainRecord,
  outputGrads: (tf.Tensor | undefined)[],
  params: (name: string) => tf.Variable,
): Promise<ChainGradients> {
  const paramGrads = new Map<string, tf.Tensor>();
  const accumulate = (name: string, grad: tf.Tensor) => addGradient(paramGrads, name, grad);
  // Gradients this function created (the caller's seeds stay the caller's).
  const mine = new Set<tf.Tensor>();
  const release = (t: tf.Tensor | undefined) => {
    if (t !== undefined && mine.has(t)) {
      mine.delete(t);
      t.dispose();
    }
  };
  let grads = outputGrads;
  let failedAt = record.segments.length - 1;
  try {
    for (let i = record.segments.length - 1; i >= 0; i--) {
      failedAt = i;
      const segment = record.segments[i];
      const inputs = record.inputs[i];
      const variables = segment.params.map(params);
      if (segment.kind === 'replicated') {
        const inputVariables = inputs.map((t) => tf.variable(t, true));
        const { value, grads: named } = tf.variableGrads(() => {
          const outs = segment.run(inputVariables);
          return vectorJacobianSeed(outs, grads);
        }, [...variables, ...inputVariables]);
        value.dispose();
        segment.params.forEach((name, k) => accumulate(name, named[variables[k].name]));
        grads.forEach(release);
        grads = inputVariables.map((v) => named[v.name]);
        grads.forEach((g) => g !== undefined && mine.add(g));
        inputVariables.forEach((v) => v.dispose());
      } else {
        const outGrad = grads[0];
        if (outGrad === undefined) throw new Error(`tensor-parallel segment ${segment.name}: no gradient reached its output`);
        const input = inputs.length > 0 ? tf.variable(inputs[0], true) : undefined;
        const { value, grads: named } = tf.variableGrads(
          () => tf.sum(tf.mul(segment.run(input), outGrad)) as tf.Scalar,
          input === undefined ? variables : [...variables, input],
        );
        value.dispose();
        segment.params.forEach((name, k) => accumulate(name, named[variables[k].name]));
        release(outGrad);
        if (input === undefined) {
          grads = grads.slice(1);
        } else {
          // f's backward: this rank's contribution to the input gradient, summed over the group.
          const partial = named[input.name];
          const full = await allReduceTensor(group, partial, 'sum');
          partial.dispose();
          input.dispose();
          mine.add(full);
          grads = [full, ...grads.slice(1)];
        }
      }
    }
    return { inputGrads: grads, paramGrads };
  } catch (error) {
    for (const grad of paramGrads.values()) grad.dispose();
    for (const t of mine) t.dispose();
    throw inSegment(error, 'backward', record.segments[failedAt], group);
  } finally {
    releaseRecord(record);
  }
}

/** Disposes what a forward kept (after its backward, or instead of one). */
export function releaseRecord(record: ChainRecord): void {
  for (const t of record.owned) if (!t.isDisposed) t.dispose();
  record.owned.clear();
}

/** sum_k sum(out_k * dy_k): its gradient is the VJP of the segment with the output gradients dy. */
function vectorJacobianSeed(outs: tf.Tensor[], grads: (tf.Tensor | undefined)[]): tf.Scalar {
  if (outs.length !== grads.length) throw new Error(`segment returned ${outs.length} tensors but the chain holds ${grads.length} gradients for them`);
  let total: tf.Tensor | undefined;
  outs.forEach((out, k) => {
    const dy = grads[k];
    if (dy === undefined) return;
    const term = tf.sum(tf.mul(out, dy));
    total = total === undefined ? term : tf.add(total, term);
  });
  if (total === undefined) throw new Error('no gradient reached any output of a replicated segment');
  return total as tf.Scalar;
}

/** An error with the segment, direction and tp rank where it happened, so a hang or a bad shape is findable. */
function inSegment(error: unknown, direction: 'forward' | 'backward', segment: Segment | undefined, group: TensorParallelGroup): Error {
  const message = error instanceof Error ? error.message : String(error);
  const where = segment === undefined ? 'before the first segment' : `in segment '${segment.name}'`;
  return new Error(`tensor-parallel ${direction} ${where} (tp rank ${group.groupRank} of ${group.size}): ${message}`, { cause: error });
}

/**
 * Implements: the model's tensor-parallel compute as synchronous local pieces with the all-reduces
 * between them, written ONCE as generators and run by one of two drivers (ARCHITECTURE.md, "Compute").
 *
 * tfjs ops are synchronous and a collective is asynchronous, so a layer cannot await in the middle of
 * its math. Instead a layer's forward or backward is a generator that yields an AllReduceRequest
 * wherever Megatron's f/g operators put a collective and receives the reduced tensor back. Run over a
 * tp group (runOverGroup) the requests become all-reduces; run locally (runLocally, a group of one)
 * every request is answered with its own tensor, so tp = 1 is the same code with the collectives
 * skipped, and a synchronous caller (the single-process Trainer) can still use it.
 *
 * Ownership: the tensor a generator yields is handed to the driver; the tensor it gets back is its own
 * (with a group of one, the same tensor).
 */
import * as tf from '../tf.ts';
import { readTensor } from '../backend/tensor-view.ts';

/** The part of a process group tensor parallelism needs; ProcessGroup satisfies it. */
export interface TensorParallelGroup {
  readonly size: number;
  /** This rank's index in the group (0..size-1): which shard it holds. */
  readonly groupRank: number;
  allReduce(values: Float32Array, op: 'sum' | 'max'): Promise<Float32Array>;
}

/** A group of one: every collective is the identity (single-process and tp = 1 runs). */
export const SINGLE_RANK_GROUP: TensorParallelGroup = {
  size: 1,
  groupRank: 0,
  allReduce: async (values) => values,
};

export interface AllReduceRequest {
  tensor: tf.Tensor;
  op: 'sum' | 'max';
  /** Where in the model, for the error a failed collective raises. */
  site: string;
}

/** A computation that may ask for all-reduces; T is its result. */
export type CollectiveSteps<T> = Generator<AllReduceRequest, T, tf.Tensor>;

export function allReduce(tensor: tf.Tensor, op: 'sum' | 'max', site: string): AllReduceRequest {
  return { tensor, op, site };
}

/** Runs steps without a group: valid only where the tp group has one member. */
export function runLocally<T>(steps: CollectiveSteps<T>): T {
  let next = steps.next();
  while (next.done !== true) next = steps.next(next.value.tensor);
  return next.value;
}

/**
 * Runs steps over `group`. Every rank of the group must run the same steps in the same order: the
 * all-reduces pair up by order. A failed collective disposes the pending tensor, lets the generator
 * release what it holds (its `finally` blocks run on return) and rethrows naming the site and rank.
 * `yieldToEventLoop`: with a group of one, let the event loop run at every request too (a few times a
 * block), so that messages (a data-parallel bucket's) move while a long backward computes.
 */
export async function runOverGroup<T>(group: TensorParallelGroup, steps: CollectiveSteps<T>, options: { yieldToEventLoop?: boolean } = {}): Promise<T> {
  let next = steps.next();
  while (next.done !== true) {
    const request = next.value;
    if (group.size === 1) {
      if (options.yieldToEventLoop === true) await new Promise<void>((resolve) => setImmediate(resolve));
      next = steps.next(request.tensor);
      continue;
    }
    let reduced: tf.Tensor;
    try {
      const values = await group.allReduce(await readTensor(request.tensor), request.op);
      reduced = tf.tensor(values, request.tensor.shape, 'float32');
    } catch (error) {
      steps.return(undefined as T);
      const message = error instanceof Error ? error.message : String(error);
      throw new Error(`tensor-parallel all-reduce at ${request.site} (tp rank ${group.groupRank} of ${group.size}): ${message}`, { cause: error });
    } finally {
      request.tensor.dispose();
    }
    next = steps.next(reduced);
  }
  return next.value;
}

/**
 * Implements: the data-parallel gradient all-reduce in buckets started during the backward (PyTorch
 * DDP's gradient buckets), instead of one all-reduce after it.
 *
 * The step's flat buffer holds the parameters' gradient sums in model order and the loss sum last
 * (one buffer for averageOverGlobalBatch too, which reduces it as a single bucket), cut into contiguous
 * buckets from its end, the order in which a backward finishes parameters. A bucket is reduced, in place, once every parameter in it is final; buckets go one after
 * another, each a collective every rank starts in the same order, so no more is in flight towards a
 * rank than one all-reduce allows (ProcessGroup's window). The reduction only progresses when the
 * event loop runs: the backward must yield between its parts (Trainer does, per block).
 *
 * Each element is still the sum of the same per-rank values; with two ranks the sum is the same float
 * whichever rank's value comes first, so the bits equal one all-reduce of the whole buffer. With more
 * ranks the ring adds in an order set by chunk boundaries, which buckets move: equal within rounding.
 */
import { withValues } from '../backend/tensor-view.ts';
import type * as tf from '../tf.ts';

/** Bytes of gradient per bucket (PyTorch DDP's default bucket_cap_mb is 25). */
export const BUCKET_BYTES = 25 * 1024 * 1024;

interface Bucket {
  /** [start, end) in the flat buffer. */
  start: number;
  end: number;
  /** Parameters (and the loss) still to become final. */
  missing: number;
}

export class BucketedGradientReduction {
  /** The step's gradient sums in model order, then the loss sum; reduced in place. */
  readonly flat: Float32Array;
  private readonly offsets = new Map<string, number>();
  private readonly sizes = new Map<string, number>();
  private readonly bucketOf = new Map<string, Bucket>();
  private readonly lossBucket: Bucket;
  private chain: Promise<void> = Promise.resolve();
  private readonly copies: Promise<void>[] = [];
  private lossSet = false;

  /**
   * `sizes[i]` values of parameter `names[i]` (the flat buffer's order, which meansOfReduced reads it
   * in); `allReduce` sums over the data-parallel group.
   */
  constructor(
    readonly names: readonly string[],
    sizes: readonly number[],
    private readonly allReduce: (values: Float32Array) => Promise<Float32Array>,
    bucketBytes = BUCKET_BYTES,
  ) {
    let total = 0;
    names.forEach((name, i) => {
      this.offsets.set(name, total);
      this.sizes.set(name, sizes[i]!);
      total += sizes[i]!;
    });
    this.flat = new Float32Array(total + 1);
    // From the end: the loss with the last parameters, then parameters until a bucket is full.
    let bucket: Bucket = { start: total, end: total + 1, missing: 1 };
    this.lossBucket = bucket;
    for (let i = names.length - 1; i >= 0; i--) {
      const size = sizes[i]!;
      if (4 * (bucket.end - bucket.start) >= bucketBytes) {
        bucket = { start: bucket.start, end: bucket.start, missing: 0 };
      }
      bucket.start -= size;
      bucket.missing++;
      this.bucketOf.set(names[i]!, bucket);
    }
  }

  /** Where `name`'s values start in `flat`. */
  offsetOf(name: string): number {
    const offset = this.offsets.get(name);
    if (offset === undefined) throw new Error(`bucketed all-reduce: ${name} is not a parameter of this reduction`);
    return offset;
  }

  /** Whether `name`'s gradient is still to be given. */
  isPending(name: string): boolean {
    return this.bucketOf.has(name);
  }

  get lossGiven(): boolean {
    return this.lossSet;
  }

  /** The loss summed over this rank's micro-batches. */
  setLoss(lossSum: number): void {
    if (this.lossSet) throw new Error('bucketed all-reduce: the loss was given twice');
    this.lossSet = true;
    this.flat[this.flat.length - 1] = lossSum;
    this.arrived(this.lossBucket);
  }

  /** `name`'s gradient, summed over this rank's micro-batches, is final: copied in (the caller keeps the tensor). */
  setGradient(name: string, sum: tf.Tensor): void {
    const bucket = this.bucketOf.get(name);
    if (bucket === undefined) throw new Error(`bucketed all-reduce: ${name} is not a parameter of this reduction, or was given twice`);
    if (sum.size !== this.sizes.get(name)) throw new Error(`bucketed all-reduce: ${name} has ${sum.size} values, the layout holds ${this.sizes.get(name)}`);
    this.bucketOf.delete(name);
    // A view of the backend's memory where it has one (wasm: copied before this returns): one copy into the buffer instead of two.
    const copied = withValues(sum, (values) => this.flat.set(values, this.offsets.get(name)!)).then(() => this.arrived(bucket));
    // A failed read (a GPU error) fails `finish`, not the process.
    copied.catch(() => {});
    this.copies.push(copied);
  }

  /** Waits for every bucket; throws if a parameter or the loss never arrived. Returns `flat`, reduced. */
  async finish(): Promise<Float32Array> {
    const missing = [...this.bucketOf.keys(), ...(this.lossSet ? [] : ['the loss'])];
    if (missing.length > 0) {
      await this.chain.catch(() => {});
      throw new Error(`bucketed all-reduce: nothing given for ${missing.join(', ')}: the backward did not reach it`);
    }
    await Promise.all(this.copies);
    await this.chain;
    return this.flat;
  }

  private arrived(bucket: Bucket): void {
    bucket.missing--;
    if (bucket.missing > 0) return;
    const values = this.flat.subarray(bucket.start, bucket.end);
    this.chain = this.chain.then(async () => {
      const reduced = await this.allReduce(values);
      if (reduced !== values) values.set(reduced);
    });
    // A failure surfaces in finish(); until then it must not count as unhandled.
    this.chain.catch(() => {});
  }
}

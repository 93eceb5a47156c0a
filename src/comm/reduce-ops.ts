/**
 * Implements: the element-wise arithmetic of the collectives: combining a contribution into a running
 * result (sum, max, min), the mean's final division, and how a flat buffer splits into one chunk per rank.
 *
 * Every combine writes through a typed array, so each float32 addition is rounded to float32 exactly as a
 * single-process float32 sum would be, and int32 sums wrap like int32 arithmetic (which keeps them
 * associative). The order of combination is the caller's business: the collectives fix it by rank.
 */

export type ReduceOp = 'sum' | 'mean' | 'max' | 'min';

export const REDUCE_OPS: readonly ReduceOp[] = ['sum', 'mean', 'max', 'min'];

export type ReduceValues = Float32Array | Int32Array;

/** Checks an op name coming from a caller (or a config file), naming the choices when it is wrong. */
export function checkReduceOp(op: string, values: ReduceValues): ReduceOp {
  if (!(REDUCE_OPS as readonly string[]).includes(op)) {
    throw new Error(`unknown reduce op ${JSON.stringify(op)}: use one of ${REDUCE_OPS.join(', ')}`);
  }
  if (op === 'mean' && values instanceof Int32Array) {
    throw new Error("reduce op 'mean' needs float32 values: an int32 mean would round; sum the int32 values and divide yourself");
  }
  return op as ReduceOp;
}

/**
 * `target[offset + i] = incoming[i] ∘ target[offset + i]` for every i. The incoming value is the left
 * operand, so in a chain the partial result always comes first (the order is then fixed by the chain).
 */
export function combineInto(target: ReduceValues, offset: number, incoming: ReduceValues, op: ReduceOp): void {
  const length = incoming.length;
  if (offset < 0 || offset + length > target.length) {
    throw new Error(`combineInto: ${length} values at offset ${offset} do not fit a buffer of ${target.length}`);
  }
  combineOf(target, offset, incoming, target.subarray(offset, offset + length), op);
}

/**
 * `target[offset + i] = incoming[i] ∘ base[i]`: combineInto with this rank's values read from `base`
 * (its input, left untouched) rather than first copied into `target`. `base` may be target's own span.
 */
export function combineOf(target: ReduceValues, offset: number, incoming: ReduceValues, base: ReduceValues, op: ReduceOp): void {
  const length = incoming.length;
  if (offset < 0 || offset + length > target.length || base.length !== length) {
    throw new Error(`combineOf: ${length} values at offset ${offset} do not fit a buffer of ${target.length} (base ${base.length})`);
  }
  if (op === 'sum' || op === 'mean') {
    if (target instanceof Float32Array && incoming instanceof Float32Array && base instanceof Float32Array) sumFloat32(target.subarray(offset, offset + length), incoming, base);
    else for (let i = 0; i < length; i++) target[offset + i] = incoming[i] + base[i];
  } else if (op === 'max') {
    for (let i = 0; i < length; i++) target[offset + i] = Math.max(incoming[i], base[i]);
  } else {
    for (let i = 0; i < length; i++) target[offset + i] = Math.min(incoming[i], base[i]);
  }
}

/**
 * The float32 sum on its own, so V8 compiles a loop of one array type: 5M floats took 9.6 ms against
 * 12.5 in the loop that also sums int32 (and so is polymorphic), measured here.
 */
function sumFloat32(target: Float32Array, incoming: Float32Array, base: Float32Array): void {
  for (let i = 0; i < target.length; i++) target[i] = incoming[i]! + base[i]!;
}

/** The mean's last step, on a finished sum (only float32 gets here: checkReduceOp refuses int32 means). */
export function divideInPlace(values: ReduceValues, start: number, end: number, divisor: number): void {
  for (let i = start; i < end; i++) values[i] = values[i] / divisor;
}

/**
 * `[start, end)` of chunk `index` when `length` elements split into `count` near-equal chunks. Chunks
 * may be empty when the buffer is shorter than the group; every rank computes the same bounds.
 */
export function chunkBounds(length: number, count: number, index: number): [number, number] {
  return [Math.floor((index * length) / count), Math.floor(((index + 1) * length) / count)];
}

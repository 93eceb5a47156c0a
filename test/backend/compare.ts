/**
 * Implements: helpers for backend parity tests: seeded random inputs, a float32-aware closeness
 * assertion that names the first bad element, and running one function on wasm and on cpu.
 */
import assert from 'node:assert/strict';
import * as tf from '../../src/tf.ts';
import { withBackend } from '../../src/backend/with-backend.ts';

/** Deterministic values in [-1, 1) (mulberry32), so failures reproduce. */
export function randomValues(size: number, seed: number): Float32Array {
  let state = seed >>> 0;
  const values = new Float32Array(size);
  for (let i = 0; i < size; i++) {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    values[i] = (((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1;
  }
  return values;
}

export interface Result {
  shape: number[];
  values: Float32Array | Int32Array | Uint8Array;
}

/** Reads a tensor into plain arrays and disposes it. */
export function take(tensor: tf.Tensor): Result {
  const result = { shape: tensor.shape.slice(), values: tensor.dataSync() as Result['values'] };
  tensor.dispose();
  return result;
}

/**
 * Element-wise |actual - expected| <= rtol * (|expected| + max|expected|), i.e. relative error
 * 1e-4 against the element or, for elements near zero, against the tensor's scale.
 */
export function assertClose(actual: Result, expected: Result, what: string, rtol = 1e-4): void {
  assert.deepEqual(actual.shape, expected.shape, `${what}: shape`);
  assert.equal(actual.values.length, expected.values.length, `${what}: element count`);
  let scale = 0;
  for (const value of expected.values) scale = Math.max(scale, Math.abs(value));
  for (let i = 0; i < expected.values.length; i++) {
    const a = actual.values[i]!;
    const e = expected.values[i]!;
    if (!(Math.abs(a - e) <= rtol * (Math.abs(e) + scale))) {
      assert.fail(`${what}: element ${i} is ${a}, expected ${e} (scale ${scale}, rtol ${rtol})`);
    }
  }
}

/** Runs `compute` on wasm and on cpu; returns both results (wasm first). */
export async function onWasmAndCpu<T>(compute: () => T): Promise<[T, T]> {
  const wasm = await withBackend('wasm', compute);
  const cpu = await withBackend('cpu', compute);
  return [wasm, cpu];
}

/** Asserts `fn` leaves the engine's tensor count unchanged. */
export async function assertNoLeak(what: string, fn: () => unknown): Promise<void> {
  const before = tf.memory().numTensors;
  await fn();
  assert.equal(tf.memory().numTensors, before, `${what}: tensors leaked`);
}

/** tf.tidy for functions that return plain data (read with `take`) rather than tensors. */
export function tidyRead<T>(fn: () => T): T {
  let result: T | undefined;
  tf.tidy(() => {
    result = fn();
  });
  return result as T;
}

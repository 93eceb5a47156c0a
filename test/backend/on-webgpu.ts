/**
 * Implements: running parity tests on the webgpu backend: starting it (a hardware adapter where there
 * is one, else Dawn's OpenGL ES backend on Mesa's software rasterizer, which every CI machine has),
 * and computing one function on webgpu and on cpu, reading results asynchronously (webgpu cannot read
 * synchronously in Node).
 *
 * A machine without the packages fails these tests with what to install: webgpu is a supported backend,
 * and a skipped test would hide that it broke.
 */
import * as tf from '../../src/tf.ts';
import { activateBackend } from '../../src/backend/select.ts';
import { withBackend } from '../../src/backend/with-backend.ts';
import type { Result } from './compare.ts';

/** Starts webgpu once (the error names what is missing), then switches back to `then`. */
export async function startWebgpu(then: 'wasm' | 'cpu' = 'cpu'): Promise<void> {
  await activateBackend('webgpu');
  await activateBackend(then);
}

/** Reads every tensor (asynchronously) into plain arrays and disposes them. */
export async function readAll(tensors: tf.Tensor[]): Promise<Result[]> {
  try {
    return await Promise.all(tensors.map(async (tensor) => ({ shape: tensor.shape.slice(), values: (await tensor.data()) as Result['values'] })));
  } finally {
    tf.dispose(tensors);
  }
}

/**
 * Runs `compute` (which returns tensors, made inside it from plain arrays) on webgpu and on cpu; returns
 * both results read back, webgpu first. Tensors made inside and not returned are disposed.
 */
export async function onWebgpuAndCpu(compute: () => tf.Tensor[]): Promise<[Result[], Result[]]> {
  const run = () => readAll(tf.tidy(compute));
  const webgpu = await withBackend('webgpu', run);
  const cpu = await withBackend('cpu', run);
  return [webgpu, cpu];
}

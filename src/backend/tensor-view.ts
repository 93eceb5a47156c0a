/**
 * Implements: reading a float32 tensor's values on the training path, on every backend, with one
 * promise: `withValues` lends them to a callback, `readTensor` returns a copy, `readScalar` one number.
 *
 * Why these and not dataSync: a GPU backend cannot read synchronously in Node (tfjs' webgpu backend
 * reads through OffscreenCanvas, which Node lacks), and every GPU read is a round trip, so reads are
 * asynchronous, few and late. On wasm `withValues` lends a view of the heap, read at once inside the
 * callback (dataSync would copy the whole tensor out first: measured 17-40 ms for the 51 MB LM head
 * gradient); a view cannot outlive the callback, since the next tfjs operation may grow the heap and
 * detach it. After a webgpu read, the device is checked: values computed after a GPU error (out of
 * memory, over a limit, lost device) are never handed out.
 */
import * as tf from '../tf.ts';
import { asWasmBackend, heapView, tensorData } from './wasm/heap.ts';
import { assertGpuHealthy } from './webgpu/activate.ts';

function requireFloat32(tensor: tf.Tensor, caller: string): void {
  if (tensor.dtype !== 'float32') throw new Error(`${caller}: tensor of dtype ${tensor.dtype}, expected float32`);
}

/**
 * The tensor's values, read-only: on cpu and webgpu they are the backend's own (cached) array, on wasm
 * a copy. Checked, on webgpu, against the device's errors.
 */
export async function readTensor(tensor: tf.Tensor): Promise<Float32Array> {
  requireFloat32(tensor, 'readTensor');
  const values = (await tensor.data()) as Float32Array;
  if (tf.getBackend() === 'webgpu') assertGpuHealthy();
  return values;
}

/** The tensor's values in an array the caller may overwrite. */
export async function readTensorCopy(tensor: tf.Tensor): Promise<Float32Array> {
  const values = await readTensor(tensor);
  return tf.getBackend() === 'wasm' ? values : values.slice();
}

/** The value of a one-element float32 tensor. */
export async function readScalar(tensor: tf.Tensor): Promise<number> {
  if (tensor.size !== 1) throw new Error(`readScalar: tensor of shape [${tensor.shape.join(', ')}], expected one value`);
  return (await readTensor(tensor))[0]!;
}

/**
 * Calls `use` with the tensor's values: on wasm a view of its heap (no copy; read it inside `use`,
 * never write to it, never keep it), elsewhere the values read from the backend. Returns what `use` returns.
 */
export async function withValues<T>(tensor: tf.Tensor, use: (values: Float32Array) => T): Promise<T> {
  requireFloat32(tensor, 'withValues');
  if (tf.getBackend() !== 'wasm') return use(await readTensor(tensor));
  const backend = asWasmBackend(tf.backend(), 'withValues');
  return use(heapView(backend, 'float32', tensorData(backend, tensor, 'withValues').memoryOffset, tensor.size) as Float32Array);
}

/** The given rows of a 2-D float32 tensor, row after row, in a new array. */
export function readRows(tensor: tf.Tensor, rows: Int32Array): Promise<Float32Array> {
  const cols = tensor.shape[1]!;
  return withValues(tensor, (values) => {
    const out = new Float32Array(rows.length * cols);
    for (let k = 0; k < rows.length; k++) out.set(values.subarray(rows[k] * cols, (rows[k] + 1) * cols), k * cols);
    return out;
  });
}

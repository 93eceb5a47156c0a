/**
 * Implements: a read-only look at a float32 tensor's values without copying them where the backend
 * allows: on wasm a view of its heap (dataSync would copy the whole tensor out first: measured 17-40 ms
 * for the 51 MB LM head gradient), elsewhere dataSync (the cpu backend's own storage, tensorflow's
 * copy). Read it at once: the next tfjs operation may grow the wasm heap and detach the view, and
 * never write to it.
 */
import * as tf from '../tf.ts';
import { asWasmBackend, heapView, tensorData } from './wasm/heap.ts';

export function valuesView(tensor: tf.Tensor): Float32Array {
  if (tensor.dtype !== 'float32') throw new Error(`valuesView: tensor of dtype ${tensor.dtype}, expected float32`);
  if (tf.getBackend() !== 'wasm') return tensor.dataSync() as Float32Array;
  const backend = asWasmBackend(tf.backend(), 'valuesView');
  return heapView(backend, 'float32', tensorData(backend, tensor, 'valuesView').memoryOffset, tensor.size) as Float32Array;
}

/** The given rows of a 2-D float32 tensor, row after row, in a new array. */
export function readRows(tensor: tf.Tensor, rows: Int32Array): Float32Array {
  const cols = tensor.shape[1]!;
  const values = valuesView(tensor);
  const out = new Float32Array(rows.length * cols);
  for (let k = 0; k < rows.length; k++) out.set(values.subarray(rows[k] * cols, (rows[k] + 1) * cols), k * cols);
  return out;
}

/**
 * Implements: the `UnsortedSegmentSum` kernel for the tfjs wasm backend, which lacks it.
 *
 * It is the gradient of `gather` (tfjs-core's GatherV2 gradient calls unsortedSegmentSum), so
 * without it a token embedding cannot be trained on wasm. out[segmentIds[i], ...] += x[i, ...];
 * ids outside [0, numSegments) are dropped, as TensorFlow does. The work is a few adds per
 * element of x, so plain TypeScript on heap views is enough.
 */
import { UnsortedSegmentSum } from '../../tf.ts';
import type { KernelConfig, KernelFunc } from '../../tf.ts';
import { asWasmBackend, heapView, sizeOf, tensorData } from './heap.ts';

const unsortedSegmentSumKernel: KernelFunc = (args) => {
  const backend = asWasmBackend(args.backend, UnsortedSegmentSum);
  const { x, segmentIds } = args.inputs;
  const numSegments = args.attrs?.['numSegments'];
  if (x === undefined || segmentIds === undefined || typeof numSegments !== 'number') {
    throw new Error(`${UnsortedSegmentSum}: expected inputs 'x', 'segmentIds' and a numeric attr ` +
      `'numSegments', got inputs [${Object.keys(args.inputs)}] and numSegments=${String(numSegments)}.`);
  }
  if (x.dtype !== 'float32' && x.dtype !== 'int32') {
    throw new Error(`${UnsortedSegmentSum}: x must be float32 or int32, got ${x.dtype}.`);
  }
  if (segmentIds.dtype !== 'int32') {
    throw new Error(`${UnsortedSegmentSum}: segmentIds must be int32, got ${segmentIds.dtype}.`);
  }
  const idsRank = segmentIds.shape.length;
  if (segmentIds.shape.some((dim, i) => dim !== x.shape[i])) {
    throw new Error(`${UnsortedSegmentSum}: segmentIds shape [${segmentIds.shape}] must be a prefix of ` +
      `x shape [${x.shape}].`);
  }
  const rowShape = x.shape.slice(idsRank);
  const rowSize = sizeOf(rowShape);
  const numIds = sizeOf(segmentIds.shape);

  const out = backend.makeOutput([numSegments, ...rowShape], x.dtype);
  // Views only after makeOutput: it may grow the heap and detach earlier views.
  const output = heapView(backend, x.dtype, tensorData(backend, out, UnsortedSegmentSum).memoryOffset, numSegments * rowSize);
  output.fill(0);
  if (numIds === 0 || rowSize === 0) return out;
  const input = heapView(backend, x.dtype, tensorData(backend, x, UnsortedSegmentSum).memoryOffset, numIds * rowSize);
  const ids = heapView(backend, 'int32', tensorData(backend, segmentIds, UnsortedSegmentSum).memoryOffset, numIds);
  for (let i = 0; i < numIds; i++) {
    const segment = ids[i]!;
    if (segment < 0 || segment >= numSegments) continue;
    const from = i * rowSize;
    const to = segment * rowSize;
    for (let j = 0; j < rowSize; j++) output[to + j] += input[from + j]!;
  }
  return out;
};

export const wasmUnsortedSegmentSumConfig: KernelConfig = {
  kernelName: UnsortedSegmentSum,
  backendName: 'wasm',
  kernelFunc: unsortedSegmentSumKernel,
};

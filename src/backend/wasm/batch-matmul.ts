/**
 * Implements: a replacement `BatchMatMul` kernel for the tfjs wasm backend that keeps every
 * matmul on the stock kernel's fast path.
 *
 * The stock wasm kernel hands a product to xnnpack (fully-connected, 40+ GFLOP/s with SIMD)
 * only when it is a single non-transposed 2-D product; anything transposed or batched goes
 * to a scalar triple loop at 1-3 GFLOP/s (MEASURED.md). Every matmul gradient is transposed
 * (dA = dC.B^T, dB = A^T.dC), so training ran on the slow loop. This kernel
 *   1. transposes operands into non-transposed form with the tiled transpose,
 *   2. folds a batched `a` into rows when `b` has a single batch (batch 1 or broadcast),
 *   3. otherwise loops over the output batches, handing the stock entry point sub-ranges of
 *      the heap registered as temporary tensor ids (no per-batch Slice copies).
 * Batch dims broadcast as in tf.matMul.
 */
import { BatchMatMul, broadcast_util } from '../../tf.ts';
import type { KernelConfig, KernelFunc, TensorInfo } from '../../tf.ts';
import {
  asWasmBackend, cachedCwrap, heapView, sizeOf, tensorData, withHeapRanges,
  type WasmBackendLike, type WasmModuleLike,
} from './heap.ts';
import { runStockKernel, setUpStockKernel } from './stock-kernels.ts';
import { transposeOnHeap } from './transpose.ts';

type StockMatMulEntry = (
  aId: number, aShape: Uint8Array, aRank: number, bId: number, bShape: Uint8Array, bRank: number,
  transposeA: boolean, transposeB: boolean, outId: number,
) => void;

const entryPoints = new WeakMap<WasmModuleLike, StockMatMulEntry>();

/**
 * The wasm side caches xnnpack's packed copy of `b` under b's tensor id, and never checks
 * the shape again. A reshape shares the id, so a tensor reused as `b` with another
 * [inner, cols] split would silently get the old packing. Keyed by dataId (shared by
 * reshapes), this records the split each id was packed with.
 */
const packedSplit = new WeakMap<object, string>();

function stockMatMulEntry(backend: WasmBackendLike): StockMatMulEntry {
  return cachedCwrap(entryPoints, backend, (wasm) =>
    wasm.cwrap(BatchMatMul, null,
      ['number', 'array', 'number', 'number', 'array', 'number', 'number', 'number', 'number']) as StockMatMulEntry);
}

function shapeBytes(shape: readonly number[]): Uint8Array {
  return new Uint8Array(new Int32Array(shape).buffer);
}

/** For each output batch index, the flat batch index of an operand broadcast to `outBatch`. */
export function broadcastBatchIndices(outBatch: readonly number[], operandBatch: readonly number[]): Int32Array {
  const total = sizeOf(outBatch);
  const indices = new Int32Array(total);
  const rankOffset = outBatch.length - operandBatch.length;
  const operandStrides = new Array<number>(operandBatch.length);
  let stride = 1;
  for (let d = operandBatch.length - 1; d >= 0; d--) {
    operandStrides[d] = stride;
    stride *= operandBatch[d]!;
  }
  for (let flat = 0; flat < total; flat++) {
    let rest = flat;
    let index = 0;
    for (let d = outBatch.length - 1; d >= 0; d--) {
      const coordinate = rest % outBatch[d]!;
      rest = Math.floor(rest / outBatch[d]!);
      const operandDim = d - rankOffset;
      if (operandDim >= 0 && operandBatch[operandDim] !== 1) index += coordinate * operandStrides[operandDim]!;
    }
    indices[flat] = index;
  }
  return indices;
}

function swapLastTwo(rank: number): number[] {
  const perm = Array.from({ length: rank }, (_, i) => i);
  perm[rank - 2] = rank - 1;
  perm[rank - 1] = rank - 2;
  return perm;
}

/** `x` with its last two dims swapped, as a temporary the caller must dispose. */
function transposedLastTwo(backend: WasmBackendLike, x: TensorInfo): TensorInfo {
  const out = transposeOnHeap(backend, x, swapLastTwo(x.shape.length));
  if (out === undefined) throw new Error(`${BatchMatMul}: cannot transpose a ${x.dtype} operand of shape [${x.shape}].`);
  return out;
}

/** Elements the non-transposed form must move for one 2-D product (rows x inner) . (inner x cols). */
function transposeCost(rows: number, inner: number, cols: number, transposeA: boolean, transposeB: boolean): number {
  return (transposeA ? rows * inner : 0) + (transposeB ? inner * cols : 0);
}

export function batchMatMulOnHeap(
  backend: WasmBackendLike, a: TensorInfo, b: TensorInfo, transposeA: boolean, transposeB: boolean,
): TensorInfo {
  const aRank = a.shape.length;
  const bRank = b.shape.length;
  const rows = transposeA ? a.shape[aRank - 1]! : a.shape[aRank - 2]!;
  const inner = transposeA ? a.shape[aRank - 2]! : a.shape[aRank - 1]!;
  const innerB = transposeB ? b.shape[bRank - 1]! : b.shape[bRank - 2]!;
  const cols = transposeB ? b.shape[bRank - 2]! : b.shape[bRank - 1]!;
  if (inner !== innerB) {
    throw new Error(`${BatchMatMul}: inner dimensions differ: a [${a.shape}] (transposeA=${transposeA}) gives ` +
      `${inner}, b [${b.shape}] (transposeB=${transposeB}) gives ${innerB}.`);
  }
  const aBatch = a.shape.slice(0, -2);
  const bBatch = b.shape.slice(0, -2);
  const outBatch = broadcast_util.assertAndGetBroadcastShape(aBatch, bBatch);
  const outShape = [...outBatch, rows, cols];
  const batches = sizeOf(outBatch);
  const aBatches = sizeOf(aBatch);
  const bBatches = sizeOf(bBatch);

  if (batches === 1 && inner > 0 && rows * cols > 0 &&
      transposeCost(cols, inner, rows, !transposeB, !transposeA) + rows * cols <
      transposeCost(rows, inner, cols, transposeA, transposeB)) {
    // C = (op(B)^T . op(A)^T)^T moves fewer elements, e.g. the LM head's weight gradient
    // dLogits^T . x, where dLogits is [rows, vocab]: transpose x and C instead of dLogits.
    const swapped = batchMatMulOnHeap(backend, b, a, !transposeB, !transposeA);
    try {
      const result = transposedLastTwo(backend, swapped);
      return { ...result, shape: outShape };
    } finally {
      backend.disposeData(swapped.dataId);
    }
  }

  const out = backend.makeOutput(outShape, 'float32');
  if (sizeOf(outShape) === 0) return out;
  if (inner === 0) {
    heapView(backend, 'float32', tensorData(backend, out, BatchMatMul).memoryOffset, sizeOf(outShape)).fill(0);
    return out;
  }

  let aNN = a;
  let bNN = b;
  try {
    if (transposeA) aNN = transposedLastTwo(backend, a);
    if (transposeB) bNN = transposedLastTwo(backend, b);
    const run = stockMatMulEntry(backend);
    const aId = tensorData(backend, aNN, BatchMatMul).id;
    const bId = tensorData(backend, bNN, BatchMatMul).id;
    const outId = tensorData(backend, out, BatchMatMul).id;
    const bMatrixShape = shapeBytes([1, inner, cols]);
    if (bBatches === 1) {
      // One product: a's batches stacked as rows. Passing b's own id lets the wasm side reuse
      // its packed copy of b across calls when b is a weight.
      const aRowsShape = shapeBytes([1, aBatches * rows, inner]);
      const split = `${inner}x${cols}`;
      const packedAs = packedSplit.get(bNN.dataId);
      if (packedAs === undefined || packedAs === split) {
        packedSplit.set(bNN.dataId, split);
        run(aId, aRowsShape, 3, bId, bMatrixShape, 3, false, false, outId);
      } else {
        const bRange = { memoryOffset: tensorData(backend, bNN, BatchMatMul).memoryOffset, size: inner * cols };
        withHeapRanges(backend, [bRange], ([freshBId]) => {
          run(aId, aRowsShape, 3, freshBId!, bMatrixShape, 3, false, false, outId);
        });
      }
      return out;
    }
    const aOffset = tensorData(backend, aNN, BatchMatMul).memoryOffset;
    const bOffset = tensorData(backend, bNN, BatchMatMul).memoryOffset;
    const outOffset = tensorData(backend, out, BatchMatMul).memoryOffset;
    const aIndex = broadcastBatchIndices(outBatch, aBatch);
    const bIndex = broadcastBatchIndices(outBatch, bBatch);
    const aMatrixShape = shapeBytes([1, rows, inner]);
    const aMatrixBytes = rows * inner * 4;
    const bMatrixBytes = inner * cols * 4;
    const outMatrixBytes = rows * cols * 4;
    for (let batch = 0; batch < batches; batch++) {
      const ranges = [
        { memoryOffset: aOffset + aIndex[batch]! * aMatrixBytes, size: rows * inner },
        { memoryOffset: bOffset + bIndex[batch]! * bMatrixBytes, size: inner * cols },
        { memoryOffset: outOffset + batch * outMatrixBytes, size: rows * cols },
      ];
      // The b range always gets a fresh id, so no stale packed operator can be reused.
      withHeapRanges(backend, ranges, ([aSliceId, bSliceId, outSliceId]) => {
        run(aBatches === 1 ? aId : aSliceId!, aMatrixShape, 3, bSliceId!, bMatrixShape, 3, false, false, outSliceId!);
      });
    }
    return out;
  } catch (error) {
    backend.disposeData(out.dataId);
    throw error;
  } finally {
    if (aNN !== a) backend.disposeData(aNN.dataId);
    if (bNN !== b) backend.disposeData(bNN.dataId);
  }
}

const batchMatMulKernel: KernelFunc = (args) => {
  const backend = asWasmBackend(args.backend, BatchMatMul);
  const { a, b } = args.inputs;
  if (a === undefined || b === undefined) {
    throw new Error(`${BatchMatMul}: expected inputs 'a' and 'b', got [${Object.keys(args.inputs)}].`);
  }
  // Other dtypes: the stock kernel raises its own error.
  if (a.dtype !== 'float32' || b.dtype !== 'float32' || a.shape.length < 2 || b.shape.length < 2) {
    return runStockKernel(BatchMatMul, args);
  }
  const transposeA = Boolean(args.attrs?.['transposeA']);
  const transposeB = Boolean(args.attrs?.['transposeB']);
  return batchMatMulOnHeap(backend, a, b, transposeA, transposeB);
};

export const wasmBatchMatMulConfig: KernelConfig = {
  kernelName: BatchMatMul,
  backendName: 'wasm',
  kernelFunc: batchMatMulKernel,
  // The engine runs this at every setBackend('wasm'); it keeps the stock kernel usable.
  setupFunc: (backend) => setUpStockKernel(BatchMatMul, backend),
};

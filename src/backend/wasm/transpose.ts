/**
 * Implements: a replacement `Transpose` kernel for the tfjs wasm backend.
 *
 * The stock kernel walks the output with a naive index loop (MEASURED.md: a 32x32-tiled
 * kernel was 3-9x faster). Every permutation is first reduced (size-1 dims dropped, dims that
 * stay adjacent merged); what remains is served by one routine when it has the form
 * out[b, c, r, i] = x[b, r, c, i] -- which covers 2-D [1,0], batched 2-D [0,2,1], [1,0,2] and the
 * attention-head split [0,2,1,3] -- and by the stock kernel otherwise.
 */
import { Transpose } from '../../tf.ts';
import type { KernelConfig, KernelFunc, TensorInfo } from '../../tf.ts';
import {
  asWasmBackend, bytesPerElement, heapView, sizeOf, tensorData, type WasmBackendLike,
} from './heap.ts';
import { simdModule } from './simd-module.ts';
import { runStockKernel, setUpStockKernel } from './stock-kernels.ts';

const TILE = 32;

interface ReducedPermutation {
  shape: number[];
  perm: number[];
}

/** Drops size-1 dims and merges runs of dims that stay adjacent and in order under `perm`. */
export function reducePermutation(shape: readonly number[], perm: readonly number[]): ReducedPermutation {
  const kept = perm.filter((axis) => shape[axis] !== 1);
  // Relabel the kept axes 0..k-1 in input order.
  const keptSorted = [...kept].sort((x, y) => x - y);
  const relabel = new Map(keptSorted.map((axis, i) => [axis, i]));
  const keptShape = keptSorted.map((axis) => shape[axis]!);
  const relabeled = kept.map((axis) => relabel.get(axis)!);

  // Runs in output order: consecutive input axes that stay consecutive merge into one dim.
  const runs: number[][] = [];
  for (const axis of relabeled) {
    const last = runs[runs.length - 1];
    if (last !== undefined && last[last.length - 1]! + 1 === axis) last.push(axis);
    else runs.push([axis]);
  }
  const runsInInputOrder = [...runs].sort((x, y) => x[0]! - y[0]!);
  const reducedShape = runsInInputOrder.map((run) => sizeOf(run.map((axis) => keptShape[axis]!)));
  const reducedPerm = runs.map((run) => runsInInputOrder.indexOf(run));
  return { shape: reducedShape, perm: reducedPerm };
}

/** (batch, rows, cols, inner) when `reduced` is out[b,c,r,i] = x[b,r,c,i], else undefined. */
function asSwapOfMiddleDims(reduced: ReducedPermutation): [number, number, number, number] | undefined {
  const { shape: s, perm } = reduced;
  const key = perm.join(',');
  if (key === '1,0') return [1, s[0]!, s[1]!, 1];
  if (key === '0,2,1') return [s[0]!, s[1]!, s[2]!, 1];
  if (key === '1,0,2') return [1, s[0]!, s[1]!, s[2]!];
  if (key === '0,2,1,3') return [s[0]!, s[1]!, s[2]!, s[3]!];
  return undefined;
}

/**
 * out[b, c, r] = x[b, r, c] over one element type. Callers pass 4-byte dtypes (float32 and int32
 * alike) as Int32Array: copying bit patterns is exact, and one element type keeps this loop
 * monomorphic, which V8 compiles to plain loads and stores.
 */
function transposeMatrices<T extends Int32Array | Uint8Array>(
  input: T, output: T, batch: number, rows: number, cols: number,
): void {
  const matrix = rows * cols;
  // Tiles keep both the rows read and the rows written in cache.
  for (let b = 0; b < batch; b++) {
    const base = b * matrix;
    for (let r0 = 0; r0 < rows; r0 += TILE) {
      const r1 = Math.min(r0 + TILE, rows);
      for (let c0 = 0; c0 < cols; c0 += TILE) {
        const c1 = Math.min(c0 + TILE, cols);
        for (let r = r0; r < r1; r++) {
          const inRow = base + r * cols;
          for (let c = c0; c < c1; c++) output[base + c * rows + r] = input[inRow + c]!;
        }
      }
    }
  }
}

/** out[b, c, r, :] = x[b, r, c, :] for runs of `runBytes` contiguous bytes: one memmove per run. */
function transposeRuns(
  heap: Uint8Array, from: number, to: number, batch: number, rows: number, cols: number, runBytes: number,
): void {
  const matrixBytes = rows * cols * runBytes;
  for (let b = 0; b < batch; b++) {
    const base = b * matrixBytes;
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        const source = from + base + (r * cols + c) * runBytes;
        heap.copyWithin(to + base + (c * rows + r) * runBytes, source, source + runBytes);
      }
    }
  }
}

/**
 * Transposes `x` on the wasm backend; returns a new backend tensor (not tracked by the engine:
 * the caller owns it and releases it with `backend.disposeData`), or undefined when the
 * permutation is not one this module speeds up.
 */
export function transposeOnHeap(
  backend: WasmBackendLike, x: TensorInfo, perm: readonly number[],
): TensorInfo | undefined {
  if (x.dtype !== 'float32' && x.dtype !== 'int32' && x.dtype !== 'bool') return undefined;
  const outShape = perm.map((axis) => x.shape[axis]!);
  const reduced = reducePermutation(x.shape, perm);
  const size = sizeOf(x.shape);
  if (reduced.perm.every((axis, i) => axis === i)) {
    const out = backend.makeOutput(outShape, x.dtype);
    if (size > 0) {
      const inOffset = tensorData(backend, x, Transpose).memoryOffset;
      const outOffset = tensorData(backend, out, Transpose).memoryOffset;
      const bytes = size * bytesPerElement(x.dtype, Transpose);
      backend.wasm.HEAPU8.copyWithin(outOffset, inOffset, inOffset + bytes);
    }
    return out;
  }
  const swap = asSwapOfMiddleDims(reduced);
  if (swap === undefined) return undefined;
  const [batch, rows, cols, inner] = swap;
  const out = backend.makeOutput(outShape, x.dtype);
  // Offsets and views only now: makeOutput may have grown (and detached) the heap.
  const from = tensorData(backend, x, Transpose).memoryOffset;
  const to = tensorData(backend, out, Transpose).memoryOffset;
  const elementBytes = bytesPerElement(x.dtype, Transpose);
  if (inner > 1) {
    transposeRuns(backend.wasm.HEAPU8, from, to, batch, rows, cols, inner * elementBytes);
  } else if (elementBytes === 4 && rows % 4 === 0 && cols % 4 === 0) {
    // 4x4 SIMD shuffles: ~5x the tiled loop below (a [50304, 64] LM head weight: 13 ms -> 2-3 ms).
    simdModule(backend).transpose(from, to, batch, rows, cols);
  } else if (elementBytes === 4) {
    const buffer = backend.wasm.HEAPU8.buffer;
    transposeMatrices(new Int32Array(buffer, from, size), new Int32Array(buffer, to, size), batch, rows, cols);
  } else {
    transposeMatrices(heapView(backend, 'bool', from, size) as Uint8Array, heapView(backend, 'bool', to, size) as Uint8Array,
      batch, rows, cols);
  }
  return out;
}

const transposeKernel: KernelFunc = (args) => {
  const backend = asWasmBackend(args.backend, Transpose);
  const x = args.inputs['x'];
  const perm = args.attrs?.['perm'] as number[] | undefined;
  if (x === undefined || perm === undefined) {
    throw new Error(`${Transpose}: expected input 'x' and attr 'perm', got inputs ` +
      `[${Object.keys(args.inputs)}] and attrs [${Object.keys(args.attrs ?? {})}].`);
  }
  return transposeOnHeap(backend, x, perm) ?? runStockKernel(Transpose, args);
};

export const wasmTransposeConfig: KernelConfig = {
  kernelName: Transpose,
  backendName: 'wasm',
  kernelFunc: transposeKernel,
  // The engine runs this at every setBackend('wasm'); it keeps the stock kernel usable.
  setupFunc: (backend) => setUpStockKernel(Transpose, backend),
};

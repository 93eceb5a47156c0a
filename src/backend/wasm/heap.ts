/**
 * Implements: typed access to the tfjs wasm backend's heap and tensor registry, so kernels
 * written in TypeScript can read/write tensors in place and hand sub-ranges of a tensor to
 * the backend's compiled entry points without copying.
 *
 * Trap: any allocation (makeOutput, or a wasm call that mallocs, e.g. xnnpack packing
 * weights) may grow the heap, which detaches every typed-array view taken before it. Take
 * views with `heapView` only after the last allocation of a kernel, and never keep them.
 */
import type { DataType, TensorInfo } from '../../tf.ts';

/** The parts of the Emscripten module behind the wasm backend that our kernels use. */
export interface WasmModuleLike {
  HEAPU8: Uint8Array;
  cwrap(name: string, returnType: null | 'number', argTypes: string[]): (...args: unknown[]) => unknown;
  tfjs: {
    registerTensor(id: number, size: number, memoryOffset: number): void;
    disposeData(id: number): void;
  };
}

export interface WasmTensorData {
  id: number;
  memoryOffset: number;
  shape: number[];
  dtype: DataType;
  refCount: number;
}

/** The parts of tfjs-backend-wasm's BackendWasm (4.22) that our kernels use. */
export interface WasmBackendLike {
  wasm: WasmModuleLike;
  dataIdMap: { get(dataId: object): WasmTensorData | undefined };
  /** Private in BackendWasm; we draw from it so our temporary ids never collide with its own. */
  dataIdNextNumber: number;
  makeOutput(shape: number[], dtype: DataType): TensorInfo;
  disposeData(dataId: object, force?: boolean): boolean;
  incRef(dataId: object): void;
}

export type HeapArray = Float32Array | Int32Array | Uint8Array;

export function asWasmBackend(backend: unknown, kernelName: string): WasmBackendLike {
  const candidate = backend as Partial<WasmBackendLike> | null;
  if (candidate == null || candidate.wasm == null || candidate.dataIdMap == null ||
      typeof candidate.dataIdNextNumber !== 'number') {
    throw new Error(`${kernelName}: expected the tfjs wasm backend (4.22 layout with wasm, dataIdMap, ` +
      `dataIdNextNumber) but got ${String(backend?.constructor?.name)}; register this kernel for 'wasm' only.`);
  }
  return candidate as WasmBackendLike;
}

export function tensorData(backend: WasmBackendLike, tensor: TensorInfo, kernelName: string): WasmTensorData {
  const data = backend.dataIdMap.get(tensor.dataId);
  if (data == null) {
    throw new Error(`${kernelName}: tensor of shape [${tensor.shape}] has no data on the wasm backend ` +
      `(disposed, or created on another backend).`);
  }
  return data;
}

export function sizeOf(shape: readonly number[]): number {
  let size = 1;
  for (const dim of shape) size *= dim;
  return size;
}

const BYTES_PER_ELEMENT: Record<string, number> = { float32: 4, int32: 4, bool: 1 };

export function bytesPerElement(dtype: DataType, kernelName: string): number {
  const bytes = BYTES_PER_ELEMENT[dtype];
  if (bytes === undefined) throw new Error(`${kernelName}: dtype '${dtype}' is not supported (float32, int32, bool).`);
  return bytes;
}

/** A fresh view of `length` elements at byte `memoryOffset`; valid until the next allocation. */
export function heapView(backend: WasmBackendLike, dtype: DataType, memoryOffset: number, length: number): HeapArray {
  const buffer = backend.wasm.HEAPU8.buffer;
  switch (dtype) {
    case 'float32': return new Float32Array(buffer, memoryOffset, length);
    case 'int32': return new Int32Array(buffer, memoryOffset, length);
    case 'bool': return new Uint8Array(buffer, memoryOffset, length);
    default: throw new Error(`heapView: dtype '${dtype}' is not supported (float32, int32, bool).`);
  }
}

/**
 * Registers a range of the heap as a tensor id known to the compiled kernels, so that
 * `fn` can pass a slice of a tensor to a wasm entry point without copying it. The ids are
 * released afterwards; releasing also drops any xnnpack operator the wasm side cached on
 * them (the matmul caches its packed right-hand side per tensor id).
 */
export function withHeapRanges<T>(
  backend: WasmBackendLike,
  ranges: ReadonlyArray<{ memoryOffset: number; size: number }>,
  fn: (ids: number[]) => T,
): T {
  const ids: number[] = [];
  try {
    for (const range of ranges) {
      const id = backend.dataIdNextNumber++;
      backend.wasm.tfjs.registerTensor(id, range.size, range.memoryOffset);
      ids.push(id);
    }
    return fn(ids);
  } finally {
    for (const id of ids) backend.wasm.tfjs.disposeData(id);
  }
}

/** cwrap once per wasm module instance (a new backend instance brings a new module). */
export function cachedCwrap<F>(
  cache: WeakMap<WasmModuleLike, F>,
  backend: WasmBackendLike,
  make: (wasm: WasmModuleLike) => F,
): F {
  let fn = cache.get(backend.wasm);
  if (fn === undefined) {
    fn = make(backend.wasm);
    cache.set(backend.wasm, fn);
  }
  return fn;
}

/**
 * Implements: this project's own wasm SIMD module, instantiated on the tfjs wasm backend's memory so
 * its functions read and write tensors in place (pointers are byte offsets, as in WasmTensorData).
 * The functions' programs are in simd-programs.ts; the kernels that call them are the
 * files of this folder that name this module.
 */
import { assembleModule } from './assembler.ts';
import { adamProgram, softmaxColumnsProgram, sumOfSquaresProgram, transposeProgram } from './simd-programs.ts';
import { geluGradProgram, geluProgram, layerNormGradProgram, layerNormProgram } from './simd-block-programs.ts';
import type { WasmBackendLike, WasmModuleLike } from './heap.ts';

export interface SimdModule {
  /**
   * Over n elements: g = grad * clip + param * l2; m' = m b1 + g c1; v' = v b2 + g g c2;
   * param' = param * decay - m' / (sqrt(v') / sqrtBc2 + eps) * stepSize; written to the out pointers.
   */
  adam(
    param: number, grad: number, m: number, v: number, outParam: number, outM: number, outV: number, n: number,
    clip: number, l2: number, decay: number, b1: number, c1: number, b2: number, c2: number, sqrtBc2: number, eps: number, stepSize: number,
  ): void;
  /**
   * Softmax down each of `cols` columns (cols a multiple of 4) of src [vocab, cols]: dstT [vocab, cols] =
   * exp(x - max) * (scale / sum), dst [cols, vocab] the same transposed; maxes and sums [cols].
   */
  softmaxColumns(src: number, dst: number, dstT: number, vocab: number, cols: number, scale: number, maxes: number, sums: number): void;
  /** The sum of x * x over n floats at ptr: squares in float32 (so overflow shows), summed in float64. */
  sumOfSquares(ptr: number, n: number): number;
  /** LayerNorm of `rows` rows of h floats (h a multiple of 4): y, xhat and rstd [rows]. */
  layerNorm(x: number, gamma: number, beta: number, y: number, xhat: number, rstd: number, rows: number, h: number, eps: number): void;
  /** LayerNorm's backward: dx [rows, h], dgamma and dbeta [h] (overwritten). */
  layerNormGrad(dy: number, xhat: number, rstd: number, gamma: number, dx: number, dgamma: number, dbeta: number, rows: number, h: number): void;
  /** GELU (tanh form) of n floats, and the tanh. */
  gelu(x: number, y: number, tanh: number, n: number): void;
  /** GELU's backward from the saved x and tanh. */
  geluGrad(dy: number, x: number, tanh: number, dx: number, n: number): void;
  /** out[b, c, r] = x[b, r, c] over `batch` matrices of [rows, cols] 4-byte elements; rows, cols multiples of 4. */
  transpose(src: number, dst: number, batch: number, rows: number, cols: number): void;
}

let bytes: Uint8Array<ArrayBuffer> | undefined;
const instances = new WeakMap<WasmModuleLike, SimdModule>();

/** The module's bytes, assembled once per process. */
export function simdModuleBytes(): Uint8Array<ArrayBuffer> {
  bytes ??= assembleModule([
    softmaxColumnsProgram(), adamProgram(), sumOfSquaresProgram(), transposeProgram(),
    layerNormProgram(), layerNormGradProgram(), geluProgram(), geluGradProgram(),
  ]);
  return bytes;
}

/**
 * Our module instantiated on `backend`'s memory, once per tfjs wasm module (a new backend instance
 * brings a new memory). Instantiation is synchronous: the module is a few kilobytes.
 */
export function simdModule(backend: WasmBackendLike): SimdModule {
  let instance = instances.get(backend.wasm);
  if (instance === undefined) {
    const memory = (backend.wasm as unknown as { asm?: { memory?: unknown } }).asm?.memory;
    if (!(memory instanceof WebAssembly.Memory)) {
      throw new Error('the tfjs wasm backend does not export its memory as Module.asm.memory (tfjs-backend-wasm 4.22 does); ' +
        'this project\'s SIMD kernels cannot run on this version: restore the stock kernels or pin 4.22.');
    }
    const exports = new WebAssembly.Instance(new WebAssembly.Module(simdModuleBytes()), { env: { memory } }).exports;
    instance = exports as unknown as SimdModule;
    instances.set(backend.wasm, instance);
  }
  return instance;
}

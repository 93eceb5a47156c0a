/**
 * Implements: this project's own wasm SIMD module, instantiated on the tfjs wasm backend's memory so
 * its functions read and write tensors in place (pointers are byte offsets, as in WasmTensorData),
 * and the programs of its functions:
 *   softmaxRows  per row of [rows, n]: max, exp(x - max) and its sum, and the softmax times a scale,
 *                4 lanes at a time (the fused cross-entropy's forward and backward; see
 *                wasm-softmax-cross-entropy.ts);
 *   adam         one pass of the Adam/AdamW update over a parameter, its gradient and both moments,
 *                in the same order of float32 operations as the tf-op formulation (see wasm-adam.ts).
 *   transpose    out[b, c, r] = x[b, r, c] for 4-byte elements, rows and cols multiples of 4, in 4x4
 *                blocks of shuffles within 32x32 tiles (see wasm-transpose.ts).
 * Tails shorter than 4 elements go through the same vector code on a splatted scalar, so every
 * element sees the same arithmetic.
 */
import { assembleModule, Op, WasmFunction } from './wasm-assembler.ts';
import type { WasmBackendLike, WasmModuleLike } from './wasm-heap.ts';

export interface SimdModule {
  /**
   * For each of `rows` rows of `n` floats at `src`: dst = exp(x - max) * (scale / sum), and
   * stats[2r] = max, stats[2r + 1] = sum of exp(x - max).
   */
  softmaxRows(src: number, dst: number, rows: number, n: number, scale: number, stats: number): void;
  /**
   * Over n elements: g = grad * clip + param * l2; m' = m b1 + g c1; v' = v b2 + g g c2;
   * param' = param * decay - m' / (sqrt(v') / sqrtBc2 + eps) * stepSize; written to the out pointers.
   */
  adam(
    param: number, grad: number, m: number, v: number, outParam: number, outM: number, outV: number, n: number,
    clip: number, l2: number, decay: number, b1: number, c1: number, b2: number, c2: number, sqrtBc2: number, eps: number, stepSize: number,
  ): void;
  /** out[b, c, r] = x[b, r, c] over `batch` matrices of [rows, cols] 4-byte elements; rows, cols multiples of 4. */
  transpose(src: number, dst: number, batch: number, rows: number, cols: number): void;
}

/** Below this exp(x) is not a normal float; the kernels' exp gives 0 there (denormals flushed). */
const EXP_LOWEST = -87.33654;

/**
 * exp of the v128 in local `x` (four f32), left on the stack; clobbers `x`, `k`, `r`, `keep`. Cephes'
 * expf: x = k ln2 + r with |r| <= ln2 / 2, a degree-7 polynomial for exp(r), and 2^k built in the
 * exponent bits; within 2 ulp of the true value. Inputs are clamped to [EXP_LOWEST, 88] so 2^k stays
 * a normal float, and lanes below EXP_LOWEST are zeroed at the end.
 */
function emitExp(f: WasmFunction, x: number, k: number, r: number, keep: number): void {
  f.get(x).f32x4(EXP_LOWEST).op(Op.f32x4Ge).set(keep);
  f.get(x).f32x4(EXP_LOWEST).op(Op.f32x4Max).f32x4(88).op(Op.f32x4Min).set(x);
  f.get(x).f32x4(1.44269504088896341).op(Op.f32x4Mul, Op.f32x4Nearest).set(k);
  // r = x - k * C1 - k * C2 with C1 + C2 = ln 2 split so k * C1 is exact.
  f.get(x).get(k).f32x4(0.693359375).op(Op.f32x4Mul, Op.f32x4Sub).get(k).f32x4(-2.12194440e-4).op(Op.f32x4Mul, Op.f32x4Sub).set(r);
  // y = ((((p0 r + p1) r + p2) r + p3) r + p4) r + p5) r^2 + r + 1
  f.get(r).f32x4(1.9875691500e-4).op(Op.f32x4Mul).f32x4(1.3981999507e-3).op(Op.f32x4Add);
  for (const coefficient of [8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1]) {
    f.get(r).op(Op.f32x4Mul).f32x4(coefficient).op(Op.f32x4Add);
  }
  f.get(r).get(r).op(Op.f32x4Mul, Op.f32x4Mul).get(r).op(Op.f32x4Add).f32x4(1).op(Op.f32x4Add);
  // times 2^k: (k + 127) << 23 is the float 2^k's bit pattern.
  f.get(k).op(Op.i32x4TruncSatF32x4S).i32x4(127).op(Op.i32x4Add).i32(23).op(Op.i32x4Shl, Op.f32x4Mul);
  f.get(keep).op(Op.v128And);
}

/** ((l0 + l1) + (l2 + l3)) or the max of the lanes of the v128 in local `v`, on the stack. */
function emitHorizontal(f: WasmFunction, v: number, combine: readonly number[]): void {
  f.get(v).f32x4ExtractLane(0).get(v).f32x4ExtractLane(1).op(combine);
  f.get(v).f32x4ExtractLane(2).get(v).f32x4ExtractLane(3).op(combine);
  f.op(combine);
}

/** Pointer to the end of the whole vectors of n floats at `base` (n & ~3) and to the end of all. */
function emitEnds(f: WasmFunction, base: number, n: number, vectorEnd: number, end: number): void {
  f.get(base).get(n).i32(-4).op(Op.i32And).i32(2).op(Op.i32Shl, Op.i32Add).set(vectorEnd);
  f.get(base).get(n).i32(2).op(Op.i32Shl, Op.i32Add).set(end);
}

function softmaxRowsProgram(): WasmFunction {
  const f = new WasmFunction('softmaxRows', ['i32', 'i32', 'i32', 'i32', 'f32', 'i32'], []);
  const [src, dst, rows, n, scale, stats] = [0, 1, 2, 3, 4, 5].map((i) => f.param(i)) as [number, number, number, number, number, number];
  const row = f.local('i32');
  const p = f.local('i32');
  const q = f.local('i32');
  const vectorEnd = f.local('i32');
  const end = f.local('i32');
  const acc = f.local('v128');
  const x = f.local('v128');
  const k = f.local('v128');
  const r = f.local('v128');
  const keep = f.local('v128');
  const max = f.local('f32');
  const sum = f.local('f32');
  const e = f.local('f32');
  const factor = f.local('v128');
  const statsEnd = f.local('i32');
  f.get(stats).get(rows).i32(3).op(Op.i32Shl, Op.i32Add).set(statsEnd);
  f.get(stats).set(row);
  // One row at a time: a row of 50304 floats (200 KB) stays in cache across the three passes.
  f.loop(row, statsEnd, 8, () => {
    emitEnds(f, src, n, vectorEnd, end);
    // Pass 1: the row's max.
    f.f32x4(-Infinity).set(acc);
    f.get(src).set(p);
    f.loop(p, vectorEnd, 16, () => { f.get(acc).get(p).v128Load().op(Op.f32x4Max).set(acc); });
    emitHorizontal(f, acc, Op.f32Max);
    f.set(max);
    f.loop(p, end, 4, () => { f.get(max).get(p).f32Load().op(Op.f32Max).set(max); });
    // Pass 2: dst = exp(x - max), summed per lane; the tail adds lane 0 of a splatted scalar.
    f.f32x4(0).set(acc);
    f.get(src).set(p);
    f.get(dst).set(q);
    f.loop(p, vectorEnd, 16, () => {
      f.get(p).v128Load().get(max).op(Op.f32x4Splat, Op.f32x4Sub).set(x);
      emitExp(f, x, k, r, keep);
      f.set(x);
      f.get(q).get(x).v128Store();
      f.get(acc).get(x).op(Op.f32x4Add).set(acc);
      f.get(q).i32(16).op(Op.i32Add).set(q);
    });
    emitHorizontal(f, acc, Op.f32Add);
    f.set(sum);
    f.loop(p, end, 4, () => {
      f.get(p).f32Load().get(max).op(Op.f32Sub, Op.f32x4Splat).set(x);
      emitExp(f, x, k, r, keep);
      f.f32x4ExtractLane(0).set(e);
      f.get(q).get(e).f32Store();
      f.get(sum).get(e).op(Op.f32Add).set(sum);
      f.get(q).i32(4).op(Op.i32Add).set(q);
    });
    // Pass 3: dst *= scale / sum.
    f.get(scale).get(sum).op(Op.f32Div, Op.f32x4Splat).set(factor);
    emitEnds(f, dst, n, vectorEnd, end);
    f.get(dst).set(q);
    f.loop(q, vectorEnd, 16, () => { f.get(q).get(q).v128Load().get(factor).op(Op.f32x4Mul).v128Store(); });
    f.loop(q, end, 4, () => { f.get(q).get(q).f32Load().get(factor).f32x4ExtractLane(0).op(Op.f32Mul).f32Store(); });
    f.get(row).get(max).f32Store(0);
    f.get(row).get(sum).f32Store(4);
    f.get(src).get(n).i32(2).op(Op.i32Shl, Op.i32Add).set(src);
    f.get(dst).get(n).i32(2).op(Op.i32Shl, Op.i32Add).set(dst);
  });
  return f;
}

function adamProgram(): WasmFunction {
  const f = new WasmFunction('adam', [...Array<'i32'>(8).fill('i32'), ...Array<'f32'>(10).fill('f32')], []);
  const [param, grad, m, v, outParam, outM, outV, n] = [0, 1, 2, 3, 4, 5, 6, 7].map((i) => f.param(i)) as number[] as [number, number, number, number, number, number, number, number];
  const [clip, l2, decay, b1, c1, b2, c2, sqrtBc2, eps, stepSize] = [8, 9, 10, 11, 12, 13, 14, 15, 16, 17].map((i) => f.param(i)) as number[];
  const i = f.local('i32');
  const vectorEnd = f.local('i32');
  const end = f.local('i32');
  const g = f.local('v128');
  const nextM = f.local('v128');
  const nextV = f.local('v128');
  const splat = (scalar: number) => f.get(scalar).op(Op.f32x4Splat);
  /** The update of 4 elements at byte offset i (vector) or of one, splatted (scalar). */
  const body = (vector: boolean) => {
    const load = (base: number) => {
      f.get(base).get(i).op(Op.i32Add);
      if (vector) f.v128Load(); else f.f32Load().op(Op.f32x4Splat);
    };
    const store = (base: number, value: number) => {
      f.get(base).get(i).op(Op.i32Add).get(value);
      if (vector) f.v128Store(); else f.f32x4ExtractLane(0).f32Store();
    };
    // The order of the tf ops it replaces: grad * clip + param * wd (Adam's L2), then the moments.
    load(grad); splat(clip!); f.op(Op.f32x4Mul);
    load(param); splat(l2!); f.op(Op.f32x4Mul, Op.f32x4Add).set(g);
    load(m); splat(b1!); f.op(Op.f32x4Mul).get(g); splat(c1!); f.op(Op.f32x4Mul, Op.f32x4Add).set(nextM);
    load(v); splat(b2!); f.op(Op.f32x4Mul).get(g).get(g).op(Op.f32x4Mul); splat(c2!); f.op(Op.f32x4Mul, Op.f32x4Add).set(nextV);
    store(outM, nextM);
    store(outV, nextV);
    // param * decay - nextM / (sqrt(nextV) / sqrtBc2 + eps) * stepSize, into g.
    load(param); splat(decay!); f.op(Op.f32x4Mul);
    f.get(nextM).get(nextV).op(Op.f32x4Sqrt); splat(sqrtBc2!); f.op(Op.f32x4Div); splat(eps!); f.op(Op.f32x4Add, Op.f32x4Div);
    splat(stepSize!); f.op(Op.f32x4Mul, Op.f32x4Sub).set(g);
    store(outParam, g);
  };
  f.get(n).i32(-4).op(Op.i32And).i32(2).op(Op.i32Shl).set(vectorEnd);
  f.get(n).i32(2).op(Op.i32Shl).set(end);
  f.i32(0).set(i);
  f.loop(i, vectorEnd, 16, () => body(true));
  f.loop(i, end, 4, () => body(false));
  return f;
}

const TILE = 32;

function transposeProgram(): WasmFunction {
  const f = new WasmFunction('transpose', ['i32', 'i32', 'i32', 'i32', 'i32'], []);
  const [src, dst, batch, rows, cols] = [0, 1, 2, 3, 4].map((i) => f.param(i)) as [number, number, number, number, number];
  const [b, r0, c0, r, c, rEnd, cEnd, p, q, srcRow, dstRow] = Array.from({ length: 11 }, () => f.local('i32'));
  const [x0, x1, x2, x3, t0, t1, t2, t3] = Array.from({ length: 8 }, () => f.local('v128'));
  const minOf = (a: () => void, limit: number) => {
    a(); f.get(limit); a(); f.get(limit).op(Op.i32LtU, Op.select);
  };
  // Byte strides of a source row and of a destination row.
  f.get(cols).i32(2).op(Op.i32Shl).set(srcRow);
  f.get(rows).i32(2).op(Op.i32Shl).set(dstRow);
  f.i32(0).set(b);
  f.loop(b, batch, 1, () => {
    f.i32(0).set(r0);
    f.loop(r0, rows, TILE, () => {
      minOf(() => f.get(r0).i32(TILE).op(Op.i32Add), rows);
      f.set(rEnd);
      f.i32(0).set(c0);
      f.loop(c0, cols, TILE, () => {
        minOf(() => f.get(c0).i32(TILE).op(Op.i32Add), cols);
        f.set(cEnd);
        f.get(r0).set(r);
        f.loop(r, rEnd, 4, () => {
          f.get(c0).set(c);
          f.loop(c, cEnd, 4, () => {
            // p = src + (r cols + c) 4, q = dst + (c rows + r) 4
            f.get(src).get(r).get(cols).op(Op.i32Mul).get(c).op(Op.i32Add).i32(2).op(Op.i32Shl, Op.i32Add).set(p);
            f.get(dst).get(c).get(rows).op(Op.i32Mul).get(r).op(Op.i32Add).i32(2).op(Op.i32Shl, Op.i32Add).set(q);
            [x0, x1, x2, x3].forEach((x, i) => { f.get(p).get(srcRow).i32(i).op(Op.i32Mul, Op.i32Add).v128Load().set(x!); });
            f.get(x0!).get(x1!).i32x4Shuffle([0, 4, 1, 5]).set(t0!);
            f.get(x0!).get(x1!).i32x4Shuffle([2, 6, 3, 7]).set(t1!);
            f.get(x2!).get(x3!).i32x4Shuffle([0, 4, 1, 5]).set(t2!);
            f.get(x2!).get(x3!).i32x4Shuffle([2, 6, 3, 7]).set(t3!);
            const rowsOut: Array<[number, number, [number, number, number, number]]> = [
              [t0!, t2!, [0, 1, 4, 5]], [t0!, t2!, [2, 3, 6, 7]], [t1!, t3!, [0, 1, 4, 5]], [t1!, t3!, [2, 3, 6, 7]],
            ];
            rowsOut.forEach(([first, second, lanes], i) => {
              f.get(q).get(dstRow).i32(i).op(Op.i32Mul, Op.i32Add).get(first).get(second).i32x4Shuffle(lanes).v128Store();
            });
          });
        });
      });
    });
    f.get(src).get(rows).get(srcRow).op(Op.i32Mul, Op.i32Add).set(src);
    f.get(dst).get(rows).get(srcRow).op(Op.i32Mul, Op.i32Add).set(dst);
  });
  return f;
}

let bytes: Uint8Array<ArrayBuffer> | undefined;
const instances = new WeakMap<WasmModuleLike, SimdModule>();

/** The module's bytes, assembled once per process. */
export function simdModuleBytes(): Uint8Array<ArrayBuffer> {
  bytes ??= assembleModule([softmaxRowsProgram(), adamProgram(), transposeProgram()]);
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

/**
 * Implements: the programs of this project's wasm SIMD module (simd-module.ts), one per function:
 *   adam            one pass of the Adam/AdamW update over a parameter, its gradient and both moments,
 *                   in the same order of float32 operations as the tf-op formulation (adam.ts);
 *   softmaxColumns  down each column of [V, cols] (the LM head's transposed logits): max, exp(x - max)
 *                   and its (compensated) sum, and the softmax times a scale in both layouts, 16
 *                   columns at a time (the fused cross-entropy; softmax-cross-entropy.ts);
 *   transpose       out[b, c, r] = x[b, r, c] for 4-byte elements, rows and cols multiples of 4, in
 *                   4x4 blocks of shuffles within 32x32 tiles (transpose.ts);
 *   sumOfSquares    a tensor's sum of squares (the gradient norm), squares in float32, sums in float64.
 * Element-wise tails of fewer than 4 elements go through the same vector code on a splatted scalar,
 * so every element sees the same arithmetic.
 */
import { Op, WasmFunction } from './assembler.ts';
import { emitExp } from './simd-exp.ts';

/** Loads the 4 elements at byte offset i of `base` (vector) or one, splatted (scalar tail). */
export type LoadAt = (base: number) => void;
/** Stores the v128 in local `value` (all 4 lanes, or lane 0 in the tail) at byte offset i of `base`. */
export type StoreAt = (base: number, value: number) => void;

/**
 * for i over n float32 elements: `body` 4 at a time, then the tail of fewer than 4 one at a time
 * through the same code on splatted scalars, so every element sees the same arithmetic.
 */
export function emitElementwise(f: WasmFunction, n: number, body: (load: LoadAt, store: StoreAt) => void): void {
  const i = f.local('i32');
  const vectorEnd = f.local('i32');
  const end = f.local('i32');
  f.get(n).i32(-4).op(Op.i32And).i32(2).op(Op.i32Shl).set(vectorEnd);
  f.get(n).i32(2).op(Op.i32Shl).set(end);
  f.i32(0).set(i);
  for (const vector of [true, false]) {
    const load: LoadAt = (base) => {
      f.get(base).get(i).op(Op.i32Add);
      if (vector) f.v128Load(); else f.f32Load().op(Op.f32x4Splat);
    };
    const store: StoreAt = (base, value) => {
      f.get(base).get(i).op(Op.i32Add).get(value);
      if (vector) f.v128Store(); else f.f32x4ExtractLane(0).f32Store();
    };
    f.loop(i, vector ? vectorEnd : end, vector ? 16 : 4, () => body(load, store));
  }
}

export function adamProgram(): WasmFunction {
  const f = new WasmFunction('adam', [...Array<'i32'>(8).fill('i32'), ...Array<'f32'>(10).fill('f32')], []);
  const [param, grad, m, v, outParam, outM, outV, n] = [0, 1, 2, 3, 4, 5, 6, 7].map((i) => f.param(i)) as number[] as [number, number, number, number, number, number, number, number];
  const [clip, l2, decay, b1, c1, b2, c2, sqrtBc2, eps, stepSize] = [8, 9, 10, 11, 12, 13, 14, 15, 16, 17].map((i) => f.param(i)) as number[];
  const g = f.local('v128');
  const nextM = f.local('v128');
  const nextV = f.local('v128');
  const splat = (scalar: number) => f.get(scalar).op(Op.f32x4Splat);
  emitElementwise(f, n, (load, store) => {
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
  });
  return f;
}

/**
 * Transposes the 4x4 block whose rows are the v128 locals `rows` (row k, lanes = columns) and hands
 * each column l, as the v128 on the stack after `address(l)` pushed its destination, to a store.
 */
function emitTransposeStore4(f: WasmFunction, rows: readonly number[], t: readonly number[], address: (l: number) => void): void {
  const [x0, x1, x2, x3] = rows as [number, number, number, number];
  const [t0, t1, t2, t3] = t as [number, number, number, number];
  f.get(x0).get(x1).i32x4Shuffle([0, 4, 1, 5]).set(t0);
  f.get(x0).get(x1).i32x4Shuffle([2, 6, 3, 7]).set(t1);
  f.get(x2).get(x3).i32x4Shuffle([0, 4, 1, 5]).set(t2);
  f.get(x2).get(x3).i32x4Shuffle([2, 6, 3, 7]).set(t3);
  const columns: Array<[number, number, [number, number, number, number]]> = [
    [t0, t2, [0, 1, 4, 5]], [t0, t2, [2, 3, 6, 7]], [t1, t3, [0, 1, 4, 5]], [t1, t3, [2, 3, 6, 7]],
  ];
  columns.forEach(([first, second, lanes], l) => {
    address(l);
    f.get(first).get(second).i32x4Shuffle(lanes).v128Store();
  });
}

/** Column strips of this many vectors (16 columns: one 64-byte cache line of each row). */
const STRIP = 4;

export function softmaxColumnsProgram(): WasmFunction {
  const f = new WasmFunction('softmaxColumns', ['i32', 'i32', 'i32', 'i32', 'i32', 'f32', 'i32', 'i32'], []);
  const [src, dst, dstT, vocab, cols, scale, maxes, sums] = [0, 1, 2, 3, 4, 5, 6, 7].map((i) => f.param(i)) as number[] as
    [number, number, number, number, number, number, number, number];
  const [column, wideEnd, rowBytes, vocabBytes, p, q, end, vocab4End, d] = Array.from({ length: 9 }, () => f.local('i32'));
  const rowOffsets = [0, 1, 2, 3].map(() => f.local('i32'));
  const acc = Array.from({ length: STRIP }, () => f.local('v128'));
  const sum = Array.from({ length: STRIP }, () => f.local('v128'));
  const factor = Array.from({ length: STRIP }, () => f.local('v128'));
  const compensation = Array.from({ length: STRIP }, () => f.local('v128'));
  const y = [0, 1, 2, 3].map(() => f.local('v128'));
  const t = [0, 1, 2, 3].map(() => f.local('v128'));
  const [x, k, r, keep, rounded] = [0, 1, 2, 3, 4].map(() => f.local('v128'));
  f.get(cols).i32(2).op(Op.i32Shl).set(rowBytes);
  f.get(vocab).i32(2).op(Op.i32Shl).set(vocabBytes);
  [0, 1, 2, 3].forEach((i) => { f.get(rowBytes).i32(i).op(Op.i32Mul).set(rowOffsets[i]!); });
  f.get(rowBytes).i32(-16 * STRIP).op(Op.i32And).set(wideEnd);
  /** One strip of `width` vectors (4 columns each) starting at byte `column` of a row. */
  const strip = (width: number) => {
    const lanes = Array.from({ length: width }, (_, i) => i);
    // Pass 1: each column's max.
    for (const i of lanes) f.f32x4(-Infinity).set(acc[i]!);
    f.get(src).get(column).op(Op.i32Add).set(p);
    f.get(p).get(vocab).get(rowBytes).op(Op.i32Mul, Op.i32Add).set(end);
    f.loop(p, end, 0, () => {
      for (const i of lanes) f.get(acc[i]!).get(p).v128Load(16 * i).op(Op.f32x4Max).set(acc[i]!);
      f.get(p).get(rowBytes).op(Op.i32Add).set(p);
    });
    // Pass 2: dstT = exp(x - max) and each column's sum.
    for (const i of lanes) f.f32x4(0).set(sum[i]!).f32x4(0).set(compensation[i]!);
    f.get(src).get(column).op(Op.i32Add).set(p);
    f.get(dstT).get(column).op(Op.i32Add).set(q);
    f.loop(p, end, 0, () => {
      for (const i of lanes) {
        f.get(p).v128Load(16 * i).get(acc[i]!).op(Op.f32x4Sub).set(x);
        emitExp(f, x, rounded, k, r, keep);
        f.set(x);
        f.get(q).get(x).v128Store(16 * i);
        // Kahan summation: a column's 50304 terms summed one after another would lose ~1e-4.
        f.get(x).get(compensation[i]!).op(Op.f32x4Sub).set(k);
        f.get(sum[i]!).get(k).op(Op.f32x4Add).set(r);
        f.get(r).get(sum[i]!).op(Op.f32x4Sub).get(k).op(Op.f32x4Sub).set(compensation[i]!);
        f.get(r).set(sum[i]!);
      }
      f.get(p).get(rowBytes).op(Op.i32Add).set(p);
      f.get(q).get(rowBytes).op(Op.i32Add).set(q);
    });
    for (const i of lanes) {
      f.get(scale).op(Op.f32x4Splat).get(sum[i]!).op(Op.f32x4Div).set(factor[i]!);
      f.get(maxes).get(column).op(Op.i32Add).get(acc[i]!).v128Store(16 * i);
      f.get(sums).get(column).op(Op.i32Add).get(sum[i]!).v128Store(16 * i);
    }
    // Pass 3: dstT *= scale / sum, and its 4x4 blocks transposed into dst's rows (dst row c starts at c * vocabBytes).
    f.get(dstT).get(column).op(Op.i32Add).set(q);
    f.get(q).get(vocab).i32(-4).op(Op.i32And).get(rowBytes).op(Op.i32Mul, Op.i32Add).set(vocab4End);
    f.get(q).get(vocab).get(rowBytes).op(Op.i32Mul, Op.i32Add).set(end);
    f.get(dst).get(column).get(vocab).op(Op.i32Mul, Op.i32Add).set(d);
    const columnRow = (c: number) => { f.get(d).get(vocabBytes).i32(c).op(Op.i32Mul, Op.i32Add); };
    f.loop(q, vocab4End, 0, () => {
      for (const i of lanes) {
        y.forEach((row, j) => {
          f.get(q).get(rowOffsets[j]!).op(Op.i32Add).set(p);
          f.get(p).get(p).v128Load(16 * i).get(factor[i]!).op(Op.f32x4Mul).tee(row).v128Store(16 * i);
        });
        emitTransposeStore4(f, y, t, (l) => columnRow(4 * i + l));
      }
      f.get(q).get(rowOffsets[3]!).op(Op.i32Add).get(rowBytes).op(Op.i32Add).set(q);
      f.get(d).i32(16).op(Op.i32Add).set(d);
    });
    // Rows past the last multiple of 4: one element per column.
    f.loop(q, end, 0, () => {
      for (const i of lanes) {
        f.get(q).get(q).v128Load(16 * i).get(factor[i]!).op(Op.f32x4Mul).tee(x).v128Store(16 * i);
        for (let l = 0; l < 4; l++) { columnRow(4 * i + l); f.get(x).f32x4ExtractLane(l).f32Store(); }
      }
      f.get(q).get(rowBytes).op(Op.i32Add).set(q);
      f.get(d).i32(4).op(Op.i32Add).set(d);
    });
  };
  f.i32(0).set(column);
  f.loop(column, wideEnd, 16 * STRIP, () => strip(STRIP));
  f.loop(column, rowBytes, 16, () => strip(1));
  return f;
}

const TILE = 32;

export function transposeProgram(): WasmFunction {
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
            emitTransposeStore4(f, [x0!, x1!, x2!, x3!], [t0!, t1!, t2!, t3!], (l) => { f.get(q).get(dstRow).i32(l).op(Op.i32Mul, Op.i32Add); });
          });
        });
      });
    });
    f.get(src).get(rows).get(srcRow).op(Op.i32Mul, Op.i32Add).set(src);
    f.get(dst).get(rows).get(srcRow).op(Op.i32Mul, Op.i32Add).set(dst);
  });
  return f;
}

export function sumOfSquaresProgram(): WasmFunction {
  const f = new WasmFunction('sumOfSquares', ['i32', 'i32'], ['f64']);
  const [ptr, n] = [f.param(0), f.param(1)];
  const [vectorEnd, end] = [f.local('i32'), f.local('i32')];
  const [square, low, high] = [f.local('v128'), f.local('v128'), f.local('v128')];
  const tail = f.local('f64');
  f.get(ptr).get(n).i32(-4).op(Op.i32And).i32(2).op(Op.i32Shl, Op.i32Add).set(vectorEnd);
  f.get(ptr).get(n).i32(2).op(Op.i32Shl, Op.i32Add).set(end);
  f.f32x4(0).set(low).f32x4(0).set(high);
  f.loop(ptr, vectorEnd, 16, () => {
    f.get(ptr).v128Load().tee(square).get(square).op(Op.f32x4Mul).set(square);
    f.get(low).get(square).op(Op.f64x2PromoteLowF32x4, Op.f64x2Add).set(low);
    f.get(high).get(square).get(square).i32x4Shuffle([2, 3, 0, 1]).op(Op.f64x2PromoteLowF32x4, Op.f64x2Add).set(high);
  });
  f.f64(0).set(tail);
  f.loop(ptr, end, 4, () => {
    f.get(tail).get(ptr).f32Load().get(ptr).f32Load().op(Op.f32Mul, Op.f64PromoteF32, Op.f64Add).set(tail);
  });
  f.get(low).f64x2ExtractLane(0).get(low).f64x2ExtractLane(1).op(Op.f64Add);
  f.get(high).f64x2ExtractLane(0).get(high).f64x2ExtractLane(1).op(Op.f64Add, Op.f64Add);
  f.get(tail).op(Op.f64Add);
  return f;
}

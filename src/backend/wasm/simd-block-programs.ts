/**
 * Implements: the programs of the wasm SIMD module (simd-module.ts) for a transformer block's
 * row-wise and element-wise pieces, each the same float32 math, in the same order, as its tf-op
 * formulation in src/model/manual/primitives.ts (sums over a row excepted: 4 lanes, then pairwise):
 *   layerNorm      rows [rows, h] (h a multiple of 4): y = xhat gamma + beta, xhat, rstd;
 *   layerNormGrad  dx, and dgamma and dbeta summed over rows in row order;
 *   gelu           y = 0.5 x (1 + tanh(C (x + A x^3))) and the tanh, kept for the backward;
 *   geluGrad       dx = dy (0.5 (1 + t) + 0.5 x (1 - t^2) C (1 + 3 A x^2)).
 * (layer-norm.ts and gelu.ts are the kernels.)
 */
import { Op, WasmFunction } from './assembler.ts';
import { emitTanh } from './simd-exp.ts';
import { emitElementwise } from './simd-programs.ts';

const GELU_A = 0.044715;
const GELU_C = Math.sqrt(2 / Math.PI);

/** ((l0 + l1) + (l2 + l3)) of the v128 in local `v`, divided by the f32 in local `count`, on the stack. */
function emitLaneMean(f: WasmFunction, v: number, count: number): void {
  f.get(v).f32x4ExtractLane(0).get(v).f32x4ExtractLane(1).op(Op.f32Add);
  f.get(v).f32x4ExtractLane(2).get(v).f32x4ExtractLane(3).op(Op.f32Add, Op.f32Add);
  f.get(count).op(Op.f32Div);
}

/**
 * Locals both LayerNorm programs walk rows with: the row's bytes (h floats), h as an f32 (the mean's
 * divisor), the end of the per-row `rstd` array, and a byte index within a row.
 */
function emitRowWalk(f: WasmFunction, h: number, rstd: number, rows: number): { rowBytes: number; rstdEnd: number; j: number; count: number } {
  const [rowBytes, rstdEnd, j] = [f.local('i32'), f.local('i32'), f.local('i32')];
  const count = f.local('f32');
  f.get(h).i32(2).op(Op.i32Shl).set(rowBytes);
  f.get(h).op(Op.f32ConvertI32S).set(count);
  f.get(rstd).get(rows).i32(2).op(Op.i32Shl, Op.i32Add).set(rstdEnd);
  return { rowBytes, rstdEnd, j, count };
}

export function layerNormProgram(): WasmFunction {
  const f = new WasmFunction('layerNorm', ['i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'f32'], []);
  const [x, gamma, beta, y, xhat, rstd, rows, h, eps] = [0, 1, 2, 3, 4, 5, 6, 7, 8].map((i) => f.param(i)) as number[] as
    [number, number, number, number, number, number, number, number, number];
  const { rowBytes, rstdEnd, j, count } = emitRowWalk(f, h, rstd, rows);
  const [mean, rs] = [f.local('f32'), f.local('f32')];
  const [acc, d] = [f.local('v128'), f.local('v128')];
  f.loop(rstd, rstdEnd, 4, () => {
    f.f32x4(0).set(acc).i32(0).set(j);
    f.loop(j, rowBytes, 16, () => { f.get(acc).get(x).get(j).op(Op.i32Add).v128Load().op(Op.f32x4Add).set(acc); });
    emitLaneMean(f, acc, count);
    f.set(mean);
    f.f32x4(0).set(acc).i32(0).set(j);
    f.loop(j, rowBytes, 16, () => {
      f.get(x).get(j).op(Op.i32Add).v128Load().get(mean).op(Op.f32x4Splat, Op.f32x4Sub).set(d);
      f.get(acc).get(d).get(d).op(Op.f32x4Mul, Op.f32x4Add).set(acc);
    });
    // rstd = 1 / sqrt(variance + eps)
    f.f32(1);
    emitLaneMean(f, acc, count);
    f.get(eps).op(Op.f32Add, Op.f32Sqrt, Op.f32Div).set(rs);
    f.get(rstd).get(rs).f32Store();
    f.i32(0).set(j);
    f.loop(j, rowBytes, 16, () => {
      f.get(x).get(j).op(Op.i32Add).v128Load().get(mean).op(Op.f32x4Splat, Op.f32x4Sub).get(rs).op(Op.f32x4Splat, Op.f32x4Mul).set(d);
      f.get(xhat).get(j).op(Op.i32Add).get(d).v128Store();
      f.get(y).get(j).op(Op.i32Add).get(d).get(gamma).get(j).op(Op.i32Add).v128Load().op(Op.f32x4Mul);
      f.get(beta).get(j).op(Op.i32Add).v128Load().op(Op.f32x4Add).v128Store();
    });
    for (const row of [x, y, xhat]) f.get(row).get(rowBytes).op(Op.i32Add).set(row);
  });
  return f;
}

export function layerNormGradProgram(): WasmFunction {
  const f = new WasmFunction('layerNormGrad', ['i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32'], []);
  const [dy, xhat, rstd, gamma, dx, dgamma, dbeta, rows, h] = [0, 1, 2, 3, 4, 5, 6, 7, 8].map((i) => f.param(i)) as number[] as
    [number, number, number, number, number, number, number, number, number];
  const { rowBytes, rstdEnd, j, count } = emitRowWalk(f, h, rstd, rows);
  const [meanG, meanGX] = [f.local('f32'), f.local('f32')];
  const [sumG, sumGX, dyv, xh, g] = [f.local('v128'), f.local('v128'), f.local('v128'), f.local('v128'), f.local('v128')];
  f.i32(0).set(j);
  f.loop(j, rowBytes, 16, () => {
    f.get(dgamma).get(j).op(Op.i32Add).f32x4(0).v128Store();
    f.get(dbeta).get(j).op(Op.i32Add).f32x4(0).v128Store();
  });
  const at = (base: number) => f.get(base).get(j).op(Op.i32Add);
  f.loop(rstd, rstdEnd, 4, () => {
    f.f32x4(0).set(sumG).f32x4(0).set(sumGX).i32(0).set(j);
    f.loop(j, rowBytes, 16, () => {
      at(dy).v128Load().set(dyv);
      at(xhat).v128Load().set(xh);
      f.get(dyv); at(gamma).v128Load().op(Op.f32x4Mul).set(g);
      f.get(sumG).get(g).op(Op.f32x4Add).set(sumG);
      f.get(sumGX).get(g).get(xh).op(Op.f32x4Mul, Op.f32x4Add).set(sumGX);
      at(dgamma); at(dgamma).v128Load().get(dyv).get(xh).op(Op.f32x4Mul, Op.f32x4Add).v128Store();
      at(dbeta); at(dbeta).v128Load().get(dyv).op(Op.f32x4Add).v128Store();
    });
    emitLaneMean(f, sumG, count);
    f.set(meanG);
    emitLaneMean(f, sumGX, count);
    f.set(meanGX);
    f.i32(0).set(j);
    // dx = (g - mean(g) - xhat mean(g xhat)) rstd
    f.loop(j, rowBytes, 16, () => {
      at(dx);
      at(dy).v128Load(); at(gamma).v128Load().op(Op.f32x4Mul).get(meanG).op(Op.f32x4Splat, Op.f32x4Sub);
      at(xhat).v128Load().get(meanGX).op(Op.f32x4Splat, Op.f32x4Mul, Op.f32x4Sub);
      f.get(rstd).f32Load().op(Op.f32x4Splat, Op.f32x4Mul).v128Store();
    });
    for (const row of [dy, xhat, dx]) f.get(row).get(rowBytes).op(Op.i32Add).set(row);
  });
  return f;
}

export function geluProgram(): WasmFunction {
  const f = new WasmFunction('gelu', ['i32', 'i32', 'i32', 'i32'], []);
  const [x, y, tanh, n] = [0, 1, 2, 3].map((i) => f.param(i)) as [number, number, number, number];
  const [xv, u, tv, s, t, k, r, keep] = Array.from({ length: 8 }, () => f.local('v128'));
  emitElementwise(f, n, (load, store) => {
    load(x); f.set(xv);
    // inner = (x + (x x x) A) C
    f.get(xv).get(xv).get(xv).op(Op.f32x4Mul).get(xv).op(Op.f32x4Mul).f32x4(GELU_A).op(Op.f32x4Mul, Op.f32x4Add).f32x4(GELU_C).op(Op.f32x4Mul).set(u);
    emitTanh(f, u, s, t, k, r, keep);
    f.set(tv);
    store(tanh, tv);
    // y = (x 0.5) (t + 1)
    f.get(xv).f32x4(0.5).op(Op.f32x4Mul).get(tv).f32x4(1).op(Op.f32x4Add, Op.f32x4Mul).set(u);
    store(y, u);
  });
  return f;
}

export function geluGradProgram(): WasmFunction {
  const f = new WasmFunction('geluGrad', ['i32', 'i32', 'i32', 'i32', 'i32'], []);
  const [dy, x, tanh, dx, n] = [0, 1, 2, 3, 4].map((i) => f.param(i)) as [number, number, number, number, number];
  const [xv, tv, out] = [f.local('v128'), f.local('v128'), f.local('v128')];
  emitElementwise(f, n, (load, store) => {
    load(x); f.set(xv);
    load(tanh); f.set(tv);
    // local = ((t 0.5) + 0.5) + ((x 0.5) (1 - t t)) ((x x) 3AC + C); dx = dy local
    load(dy);
    f.get(tv).f32x4(0.5).op(Op.f32x4Mul).f32x4(0.5).op(Op.f32x4Add);
    f.get(xv).f32x4(0.5).op(Op.f32x4Mul).f32x4(1).get(tv).get(tv).op(Op.f32x4Mul, Op.f32x4Sub, Op.f32x4Mul);
    f.get(xv).get(xv).op(Op.f32x4Mul).f32x4(3 * GELU_A * GELU_C).op(Op.f32x4Mul).f32x4(GELU_C).op(Op.f32x4Add);
    f.op(Op.f32x4Mul, Op.f32x4Add, Op.f32x4Mul).set(out);
    store(dx, out);
  });
  return f;
}

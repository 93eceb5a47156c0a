/**
 * Implements: exp for the SIMD kernels (simd-programs.ts), as an instruction sequence over four
 * float32 lanes, for the softmax's shifted logits and tanh's exp(-2|u|): inputs <= 0 (or NaN); and
 * tanh from it (GELU).
 */
import { Op, type WasmFunction } from './assembler.ts';

/** Below this exp(x) is not a normal float; the kernels' exp gives 0 there (denormals flushed). */
const EXP_LOWEST = -87.33654;

/** 1.5 * 2^23 + 127: added to a float below 2^22 in size, it rounds it to an integer kept, plus the
 * exponent bias, in the low mantissa bits. */
const ROUNDING_MAGIC = 12582912 + 127;

/**
 * exp of the v128 in local `x` (four f32, each <= 0 or NaN: a softmax's shifted logits), left on the
 * stack; clobbers `t`, `k`, `r`, `keep`. Cephes' expf: x = k ln2 + r with |r| <= ln2 / 2, a degree-7
 * polynomial for exp(r), and 2^k built in the exponent bits; within 2 ulp of the true value. Lanes
 * below EXP_LOWEST (and NaN) give 0. Written for V8's x86 code: no wasm min/max and no float-to-int
 * conversion (each several instructions there); k is rounded by the magic-number add, whose bits,
 * shifted, are 2^k (this pass is most of the fused cross-entropy's time).
 */
export function emitExp(f: WasmFunction, x: number, t: number, k: number, r: number, keep: number): void {
  f.get(x).f32x4(EXP_LOWEST).op(Op.f32x4Ge).set(keep);
  f.get(x).f32x4(1.44269504088896341).op(Op.f32x4Mul).f32x4(ROUNDING_MAGIC).op(Op.f32x4Add).tee(t);
  f.f32x4(ROUNDING_MAGIC).op(Op.f32x4Sub).set(k);
  // r = x - k * C1 - k * C2 with C1 + C2 = ln 2 split so k * C1 is exact.
  f.get(x).get(k).f32x4(0.693359375).op(Op.f32x4Mul, Op.f32x4Sub).get(k).f32x4(-2.12194440e-4).op(Op.f32x4Mul, Op.f32x4Sub).set(r);
  // y = ((((p0 r + p1) r + p2) r + p3) r + p4) r + p5) r^2 + r + 1
  f.get(r).f32x4(1.9875691500e-4).op(Op.f32x4Mul).f32x4(1.3981999507e-3).op(Op.f32x4Add);
  for (const coefficient of [8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1]) {
    f.get(r).op(Op.f32x4Mul).f32x4(coefficient).op(Op.f32x4Add);
  }
  f.get(r).get(r).op(Op.f32x4Mul, Op.f32x4Mul).get(r).op(Op.f32x4Add).f32x4(1).op(Op.f32x4Add);
  // times 2^k: t's low bits hold k + 127; shifted into the exponent field they are the float 2^k.
  f.get(t).i32(23).op(Op.i32x4Shl, Op.f32x4Mul);
  f.get(keep).op(Op.v128And);
}

/**
 * tanh of the v128 in local `u`, left on the stack; clobbers `x` and emitExp's locals. With
 * e = exp(-2|u|) (<= 1, so emitExp's range): tanh|u| = (1 - e) / (1 + e), given u's sign. Absolute
 * error ~1e-7 (relative error grows near 0, where 1 - e cancels; GELU only adds it to 1).
 */
export function emitTanh(f: WasmFunction, u: number, x: number, t: number, k: number, r: number, keep: number): void {
  f.get(u).op(Op.f32x4Abs).f32x4(-2).op(Op.f32x4Mul).set(x);
  emitExp(f, x, t, k, r, keep);
  f.set(x);
  f.f32x4(1).get(x).op(Op.f32x4Sub).f32x4(1).get(x).op(Op.f32x4Add, Op.f32x4Div);
  f.get(u).i32x4(-0x80000000).op(Op.v128And, Op.v128Xor);
}

/**
 * Implements: a minimal WebAssembly binary assembler, enough to write SIMD kernels that run on the
 * tfjs wasm backend's own memory (see simd-module.ts): functions of i32/f32/v128 values,
 * structured loops, loads and stores, scalar and f32x4/i32x4 arithmetic.
 *
 * Why assemble by hand: the stock backend has no fused kernels, its element-wise kernels are scalar
 * C++ (Exp ~8 ns an element), and plain JavaScript is no faster (a polynomial exp measured 5 ns an
 * element). Wasm SIMD written here runs at memory speed, needs no toolchain, and WebAssembly.validate
 * checks every function's types when the module is built.
 */

export type ValueType = 'i32' | 'f32' | 'f64' | 'v128';

const TYPE_CODE: Record<ValueType, number> = { i32: 0x7f, f32: 0x7d, f64: 0x7c, v128: 0x7b };

/** Opcodes without immediates (SIMD ones carry their 0xfd prefix). */
export const Op = {
  drop: [0x1a], select: [0x1b],
  i32Eqz: [0x45], i32LtU: [0x49], i32GeU: [0x4f],
  i32Add: [0x6a], i32Sub: [0x6b], i32Mul: [0x6c], i32And: [0x71], i32Shl: [0x74],
  f32Sqrt: [0x91], f32Add: [0x92], f32Sub: [0x93], f32Mul: [0x94], f32Div: [0x95], f32Min: [0x96], f32Max: [0x97],
  f64Add: [0xa0], f64PromoteF32: [0xbb], f32ConvertI32S: [0xb2],
  f32x4Splat: [0xfd, 0x13], i32x4Splat: [0xfd, 0x11],
  f32x4Ge: [0xfd, 0x46], v128And: [0xfd, 0x4e], v128Xor: [0xfd, 0x51],
  f32x4Abs: [0xfd, 0xe0, 0x01],
  f32x4Nearest: [0xfd, 0x6a],
  i32x4Shl: [0xfd, 0xab, 0x01], i32x4Add: [0xfd, 0xae, 0x01],
  f32x4Sqrt: [0xfd, 0xe3, 0x01], f32x4Add: [0xfd, 0xe4, 0x01], f32x4Sub: [0xfd, 0xe5, 0x01],
  f32x4Mul: [0xfd, 0xe6, 0x01], f32x4Div: [0xfd, 0xe7, 0x01], f32x4Min: [0xfd, 0xe8, 0x01], f32x4Max: [0xfd, 0xe9, 0x01],
  i32x4TruncSatF32x4S: [0xfd, 0xf8, 0x01],
  f64x2PromoteLowF32x4: [0xfd, 0x5f], f64x2Add: [0xfd, 0xf0, 0x01],
} as const;

function unsignedLeb(value: number): number[] {
  const bytes: number[] = [];
  do {
    let byte = value & 0x7f;
    value >>>= 7;
    if (value !== 0) byte |= 0x80;
    bytes.push(byte);
  } while (value !== 0);
  return bytes;
}

function signedLeb(value: number): number[] {
  const bytes: number[] = [];
  for (;;) {
    const byte = value & 0x7f;
    value >>= 7;
    const done = (value === 0 && (byte & 0x40) === 0) || (value === -1 && (byte & 0x40) !== 0);
    bytes.push(done ? byte : byte | 0x80);
    if (done) return bytes;
  }
}

function f32Bytes(value: number): number[] {
  return [...new Uint8Array(new Float32Array([value]).buffer)];
}

function name(text: string): number[] {
  const utf8 = [...new TextEncoder().encode(text)];
  return [...unsignedLeb(utf8.length), ...utf8];
}

function vector(items: number[][]): number[] {
  return [...unsignedLeb(items.length), ...items.flat()];
}

/** One exported function: its signature, its locals and its instructions, written in order. */
export class WasmFunction {
  readonly code: number[] = [];
  private readonly locals: ValueType[] = [];

  constructor(readonly exportName: string, readonly params: readonly ValueType[], readonly results: readonly ValueType[]) {}

  /** Index of parameter `i` (parameters are the first locals). */
  param(i: number): number {
    if (i < 0 || i >= this.params.length) throw new Error(`${this.exportName}: no parameter ${i}`);
    return i;
  }

  /** A new local of `type`; returns its index. */
  local(type: ValueType): number {
    this.locals.push(type);
    return this.params.length + this.locals.length - 1;
  }

  op(...codes: ReadonlyArray<readonly number[]>): this {
    for (const code of codes) this.code.push(...code);
    return this;
  }

  get(index: number): this { return this.op([0x20, ...unsignedLeb(index)]); }
  set(index: number): this { return this.op([0x21, ...unsignedLeb(index)]); }
  tee(index: number): this { return this.op([0x22, ...unsignedLeb(index)]); }
  i32(value: number): this { return this.op([0x41, ...signedLeb(value | 0)]); }
  f32(value: number): this { return this.op([0x43, ...f32Bytes(value)]); }
  f64(value: number): this { return this.op([0x44, ...new Uint8Array(new Float64Array([value]).buffer)]); }
  /** A v128 constant with `value` in all four f32 lanes. */
  f32x4(value: number): this { return this.op([0xfd, 0x0c, ...[0, 1, 2, 3].flatMap(() => f32Bytes(value))]); }
  /** A v128 constant with `value` in all four i32 lanes. */
  i32x4(value: number): this {
    return this.op([0xfd, 0x0c, ...[0, 1, 2, 3].flatMap(() => [...new Uint8Array(new Int32Array([value]).buffer)])]);
  }

  f32Load(offset = 0): this { return this.op([0x2a, 0x02, ...unsignedLeb(offset)]); }
  f32Store(offset = 0): this { return this.op([0x38, 0x02, ...unsignedLeb(offset)]); }
  i32Load(offset = 0): this { return this.op([0x28, 0x02, ...unsignedLeb(offset)]); }
  v128Load(offset = 0): this { return this.op([0xfd, 0x00, 0x04, ...unsignedLeb(offset)]); }
  v128Store(offset = 0): this { return this.op([0xfd, 0x0b, 0x04, ...unsignedLeb(offset)]); }
  f32x4ExtractLane(lane: number): this { return this.op([0xfd, 0x1f, lane]); }
  f64x2ExtractLane(lane: number): this { return this.op([0xfd, 0x21, lane]); }
  /** i8x16.shuffle by 32-bit lanes: lanes 0-3 from the first operand, 4-7 from the second. */
  i32x4Shuffle(lanes: readonly [number, number, number, number]): this {
    return this.op([0xfd, 0x0d, ...lanes.flatMap((lane) => [4 * lane, 4 * lane + 1, 4 * lane + 2, 4 * lane + 3])]);
  }

  /**
   * for (p = start; p < end; p += step) body(): `pointer` must hold the start; the loop advances it
   * and leaves it at the first value not below `end` (a local as well). Step 0: the body advances it.
   */
  loop(pointer: number, end: number, step: number, body: () => void): this {
    this.op([0x02, 0x40], [0x03, 0x40]);
    this.get(pointer).get(end).op(Op.i32GeU, [0x0d, 0x01]);
    body();
    if (step !== 0) this.get(pointer).i32(step).op(Op.i32Add).set(pointer);
    return this.op([0x0c, 0x00], [0x0b], [0x0b]);
  }

  /** The function body as the code section wants it. */
  encode(): number[] {
    const groups: number[][] = this.locals.map((type) => [1, TYPE_CODE[type]]);
    const body = [...vector(groups), ...this.code, 0x0b];
    return [...unsignedLeb(body.length), ...body];
  }
}

/**
 * A module importing its memory as env.memory and exporting `functions`. Throws, naming the
 * functions, when the bytes do not validate (a kernel written with mismatched types).
 */
export function assembleModule(functions: readonly WasmFunction[]): Uint8Array<ArrayBuffer> {
  const types = functions.map((f) => [0x60, ...vector(f.params.map((t) => [TYPE_CODE[t]])), ...vector(f.results.map((t) => [TYPE_CODE[t]]))]);
  const section = (id: number, items: number[][]) => {
    const content = vector(items);
    return [id, ...unsignedLeb(content.length), ...content];
  };
  const bytes = new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, types),
    // A memory of at least one page, any maximum: the tfjs module's own.
    ...section(2, [[...name('env'), ...name('memory'), 0x02, 0x00, 0x01]]),
    ...section(3, functions.map((_, i) => unsignedLeb(i))),
    ...section(7, functions.map((f, i) => [...name(f.exportName), 0x00, ...unsignedLeb(i)])),
    ...section(10, functions.map((f) => f.encode())),
  ]);
  if (!WebAssembly.validate(bytes)) {
    throw new Error(`assembleModule: the module of [${functions.map((f) => f.exportName).join(', ')}] does not validate; ` +
      'check the kernels\' instruction types (new WebAssembly.Module(bytes) names the offending offset).');
  }
  return bytes;
}

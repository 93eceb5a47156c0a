/**
 * Implements: the small frame every fused webgpu kernel of this project is written in: a program in
 * the shape of tfjs' `WebGPUProgram`, run by the stock backend's `runWebGPUProgram` (which adds the
 * bindings, the shape uniforms and the pipeline cache), as an element-wise pass or as one workgroup
 * per row with a workgroup sum.
 *
 * Why local types instead of the package's: `@tensorflow/tfjs-backend-webgpu` is an optional
 * dependency loaded at run time (activate.ts), and these kernels use only `runWebGPUProgram`,
 * `makeTensorInfo`, `disposeData` and the device's limits, so nothing here needs the package to
 * type-check or to load.
 *
 * A WebGPU program writes one output (the binding `result`), so a kernel with several outputs runs one
 * program per output, as the stock multi-output kernels (TopK) do. Each still costs a dispatch, but not
 * an engine op: a tensor's bookkeeping, a kernel lookup and, for tf ops, the temporaries between them.
 *
 * Two rules of the stock backend a shader must keep: it must read every input it names and `uniforms`
 * (the pipeline layout is derived from the shader, so an unread binding is dropped and the bind group
 * fails validation: an event, not an exception, and an unwritten output), and each run needs a fresh
 * program object (the backend extends `shaderKey` in place).
 */
import type { DataType, KernelBackend, TensorInfo } from '../../tf.ts';

/** The fields of tfjs' WebGPUProgram these kernels set (tfjs-backend-webgpu dist/webgpu_program.d.ts). */
export interface WebgpuProgram {
  variableNames: string[];
  outputShape: number[];
  /** The stock backend extends it with the inputs' ranks and dtypes to key its pipeline cache. */
  shaderKey: string;
  dispatchLayout: { x: number[] };
  dispatch: [number, number, number];
  workgroupSize: [number, number, number];
  /** Adds `uniforms.size`, the output's element count. */
  size?: boolean;
  /** Extra uniform fields, WGSL, each followed by a comma: `scalars`, declared. */
  uniforms?: string;
  getUserCode(): string;
  /** Ours, not tfjs': the values of `uniforms`, passed by runProgram. */
  scalars: Scalar[];
}

interface ProgramUniform {
  type: 'float32' | 'int32';
  data: number[];
}

/** A scalar uniform of a program: declared in its WGSL as `uniforms.<name>` and passed at each run. */
export interface Scalar {
  name: string;
  type: 'f32' | 'i32';
  value: number;
}

/** What these kernels use of tfjs' WebGPUBackend. */
export interface WebgpuBackendLike extends KernelBackend {
  device: GPUDevice;
  runWebGPUProgram(program: WebgpuProgram, inputs: TensorInfo[], outputDtype: DataType, uniforms?: ProgramUniform[], output?: TensorInfo): TensorInfo;
  makeTensorInfo(shape: number[], dtype: DataType): TensorInfo;
}

export function asWebgpuBackend(backend: unknown, kernel: string): WebgpuBackendLike {
  if (typeof (backend as Partial<WebgpuBackendLike>).runWebGPUProgram !== 'function') {
    throw new Error(`${kernel}: registered for 'webgpu' but called with another backend.`);
  }
  return backend as WebgpuBackendLike;
}

/** Runs `program` with its scalars; into `output` where given (it may hold values the program keeps). */
export function runProgram(backend: WebgpuBackendLike, program: WebgpuProgram, inputs: TensorInfo[], dtype: DataType, output?: TensorInfo): TensorInfo {
  const uniforms = program.scalars.map(({ type, value }): ProgramUniform => ({ type: type === 'f32' ? 'float32' : 'int32', data: [value] }));
  return backend.runWebGPUProgram(program, inputs, dtype, uniforms, output);
}

function declare(scalars: Scalar[]): { uniforms?: string; scalars: Scalar[] } {
  if (scalars.length === 0) return { scalars };
  return { uniforms: scalars.map(({ name, type }) => `${name} : ${type}, `).join(''), scalars };
}

/** A WGSL f32 literal that is exactly `value` rounded to float32, as a tf scalar would hold it. */
export function f32(value: number): string {
  const rounded = Math.fround(value);
  if (!Number.isFinite(rounded)) throw new Error(`f32: ${value} has no finite float32 literal`);
  return `${rounded}f`;
}

const ELEMENTWISE_WORKGROUP = 64;

/**
 * One invocation per output element: `body` sees `index` (below `uniforms.size`) and writes
 * `result[index]`.
 */
export function elementwiseProgram(key: string, variableNames: string[], shape: number[], body: string, scalars: Scalar[] = []): WebgpuProgram {
  const size = shape.reduce((product, dim) => product * dim, 1);
  return {
    variableNames,
    outputShape: shape,
    shaderKey: key,
    dispatchLayout: { x: shape.map((_, axis) => axis) },
    dispatch: [Math.ceil(size / ELEMENTWISE_WORKGROUP), 1, 1],
    workgroupSize: [ELEMENTWISE_WORKGROUP, 1, 1],
    size: true,
    ...declare(scalars),
    getUserCode: () => `
      fn main(index : i32) {
        if (index < uniforms.size) {
          ${body}
        }
      }`,
  };
}

/** Threads of a per-row workgroup: the row (or column) length `cols` spread over enough of them. */
function rowWorkgroup(cols: number): number {
  return cols >= 4096 ? 256 : cols >= 512 ? 128 : 64;
}

/** Writes WGSL that reduces `value` over the workgroup into `let <into>` in every thread. */
export type Reduce = (into: string, value: string, op?: 'sum' | 'max') => string;

/**
 * One workgroup per row of `rows` (workgroups past the last one, which the backend adds when it
 * reshapes a dispatch over 65535, compute nothing). `body` runs in every thread with `row` and
 * `valid` (the row exists), `tid` and `threads` (its index in the workgroup and their count); what
 * its `reduce` writes every thread must reach (no early return: barriers need uniform control flow).
 *
 * Each reduction has a workgroup array of its own, never written again once reduced: on llvmpipe a
 * load of the total (`let total = partials[0]`) was moved past the barrier after it, so a second
 * reduction in the same array fed some threads its own first partial sums instead of the total.
 */
export function rowProgram(key: string, variableNames: string[], outputShape: number[], rows: number, cols: number, body: (reduce: Reduce) => string, scalars: Scalar[] = []): WebgpuProgram {
  const threads = rowWorkgroup(cols);
  const arrays: string[] = [];
  // A tree over the workgroup's values: the same order on every run.
  const reduce: Reduce = (into, value, op = 'sum') => {
    const partials = `partials_${into}`;
    arrays.push(`var<workgroup> ${partials} : array<f32, ${threads}>;`);
    return `
        ${partials}[tid] = ${value};
        workgroupBarrier();
        for (var stride = ${threads / 2}; stride > 0; stride = stride >> 1u) {
          if (tid < stride) {
            ${partials}[tid] = ${op === 'sum' ? `${partials}[tid] + ${partials}[tid + stride]` : `max(${partials}[tid], ${partials}[tid + stride])`};
          }
          workgroupBarrier();
        }
        let ${into} = ${partials}[0];`;
  };
  return {
    variableNames,
    outputShape,
    shaderKey: key,
    dispatchLayout: { x: outputShape.map((_, axis) => axis) },
    dispatch: [rows, 1, 1],
    workgroupSize: [threads, 1, 1],
    ...declare([{ name: 'rows', type: 'i32', value: rows }, ...scalars]),
    getUserCode: () => {
      const main = body(reduce);
      return `
      const threads = ${threads};
      ${arrays.splice(0).join('\n      ')}

      fn main(index : i32) {
        let row = index / threads;
        let tid = i32(localId.x);
        let valid = row < uniforms.rows;
        ${main}
      }`;
    },
  };
}

/**
 * Implements: the column sums of a [rows, h] matrix on webgpu, of its elements or of their products
 * with a second matrix's: `GptHybridColumnSums` (a linear's bias gradient, the rows' sum of its output
 * gradient) and the dgamma/dbeta of layer-norm-grad.ts.
 *
 * Why: the stock reduction over axis 0 transposes first, two dispatches; this is one (64 columns a
 * workgroup, 4 lanes of rows each, so a long batch of rows is still read by 256 threads).
 */
import type { KernelConfig, KernelFunc } from '../../tf.ts';
import { COLUMN_SUMS } from '../kernel-names.ts';
import { asWebgpuBackend, runProgram, type WebgpuProgram } from './program.ts';

const COLUMNS = 64;
const LANES = 4;

/** Column sums over the rows of `dy` [rows, h], or of dy * xhat where `withXhat`: [h]. */
export function columnSumProgram(rows: number, h: number, withXhat: boolean): WebgpuProgram {
  return {
    variableNames: withXhat ? ['dy', 'xhat'] : ['dy'],
    outputShape: [h],
    shaderKey: withXhat ? 'gptColumnSumsOfProducts' : 'gptColumnSums',
    dispatchLayout: { x: [0] },
    dispatch: [Math.ceil(h / COLUMNS), 1, 1],
    workgroupSize: [COLUMNS, LANES, 1],
    uniforms: 'rows : i32, ',
    scalars: [{ name: 'rows', type: 'i32', value: rows }],
    getUserCode: () => `
      var<workgroup> lanes : array<array<f32, ${COLUMNS}>, ${LANES}>;
      fn main(index : i32) {
        let h = uniforms.outShape;
        let column = i32(workgroupId.x) * ${COLUMNS} + i32(localId.x);
        let lane = i32(localId.y);
        var sum = 0.0;
        for (var r = lane; column < h && r < uniforms.rows; r += ${LANES}) {
          let i = r * h + column;
          sum += ${withXhat ? 'dy[i] * xhat[i]' : 'dy[i]'};
        }
        lanes[lane][localId.x] = sum;
        workgroupBarrier();
        if (lane == 0 && column < h) {
          var total = lanes[0][localId.x];
          for (var l = 1; l < ${LANES}; l++) {
            total += lanes[l][localId.x];
          }
          result[column] = total;
        }
      }`,
  };
}

const columnSumsKernel: KernelFunc = (args) => {
  const backend = asWebgpuBackend(args.backend, COLUMN_SUMS);
  const { x } = args.inputs;
  if (x === undefined || x.shape.length !== 2 || x.dtype !== 'float32') {
    throw new Error(`${COLUMN_SUMS}: expected one float32 input 'x' [rows, h], got ${x === undefined ? `[${Object.keys(args.inputs)}]` : `${x.dtype} [${x.shape}]`}.`);
  }
  const [rows, h] = x.shape as [number, number];
  return runProgram(backend, columnSumProgram(rows, h, false), [x], 'float32');
};

export const webgpuColumnSumsConfig: KernelConfig = { kernelName: COLUMN_SUMS, backendName: 'webgpu', kernelFunc: columnSumsKernel };

/**
 * Implements: matmul throughput on the current tfjs backend (GFLOP/s), for the dense 2-D case and
 * for the transposed/batched shapes a GPT training step produces. Run directly
 * (`node --import tsx bench/matmul.ts`) it prints stock wasm kernels against this project's
 * replacements, side by side.
 */
import { pathToFileURL } from 'node:url';
import * as tf from '../src/tf.ts';
import { initBackend } from '../src/backend/select.ts';
import { registerWasmTrainingKernels, restoreStockWasmKernels } from '../src/backend/wasm/kernels.ts';
import { median } from './report.ts';

export interface MatmulBenchOptions {
  /** Untimed runs first (the first call packs weights, grows the heap). Default 2. */
  warmup?: number;
  /** Timed runs; the median is reported. Default 5. */
  runs?: number;
}

export interface MatmulCase {
  name: string;
  aShape: number[];
  bShape: number[];
  transposeA: boolean;
  transposeB: boolean;
}

/** Shapes of GPT (hidden 256, seq 128, batch 8, 4 heads of 64) forward and backward matmuls. */
export const TRAINING_MATMUL_CASES: readonly MatmulCase[] = [
  { name: 'NN 1024x256 . 256x1024 (forward)', aShape: [1024, 256], bShape: [256, 1024], transposeA: false, transposeB: false },
  { name: 'NT 1024x1024 . (256x1024)^T (dX)', aShape: [1024, 1024], bShape: [256, 1024], transposeA: false, transposeB: true },
  { name: 'TN (1024x256)^T . 1024x1024 (dW)', aShape: [1024, 256], bShape: [1024, 1024], transposeA: true, transposeB: false },
  { name: 'NN [8,128,256] . 256x1024 (3-D in)', aShape: [8, 128, 256], bShape: [256, 1024], transposeA: false, transposeB: false },
  { name: 'NT [32,128,64] . [32,128,64]^T (q.k)', aShape: [32, 128, 64], bShape: [32, 128, 64], transposeA: false, transposeB: true },
  { name: 'NN [32,128,128] . [32,128,64] (att.v)', aShape: [32, 128, 128], bShape: [32, 128, 64], transposeA: false, transposeB: false },
  { name: 'TN [32,128,128]^T . [32,128,64] (dV)', aShape: [32, 128, 128], bShape: [32, 128, 64], transposeA: true, transposeB: false },
];

function flopsOf(matmul: MatmulCase): number {
  const rank = matmul.aShape.length;
  const rows = matmul.transposeA ? matmul.aShape[rank - 1]! : matmul.aShape[rank - 2]!;
  const inner = matmul.transposeA ? matmul.aShape[rank - 2]! : matmul.aShape[rank - 1]!;
  const bRank = matmul.bShape.length;
  const cols = matmul.transposeB ? matmul.bShape[bRank - 2]! : matmul.bShape[bRank - 1]!;
  const batches = Math.max(
    matmul.aShape.slice(0, -2).reduce((x, y) => x * y, 1),
    matmul.bShape.slice(0, -2).reduce((x, y) => x * y, 1),
  );
  return 2 * batches * rows * inner * cols;
}

/** GFLOP/s of one matmul shape on the current backend: warm-up, then the median of timed runs. */
export async function measureMatmulCaseGflops(matmul: MatmulCase, opts: MatmulBenchOptions = {}): Promise<number> {
  const warmup = opts.warmup ?? 2;
  const runs = opts.runs ?? 5;
  const a = tf.randomNormal(matmul.aShape, 0, 1, 'float32', 1);
  const b = tf.randomNormal(matmul.bShape, 0, 1, 'float32', 2);
  const seconds: number[] = [];
  try {
    for (let i = 0; i < warmup + runs; i++) {
      const start = performance.now();
      const c = tf.matMul(a, b, matmul.transposeA, matmul.transposeB);
      await c.data(); // forces the work on asynchronous backends
      const elapsed = (performance.now() - start) / 1000;
      c.dispose();
      if (i >= warmup) seconds.push(elapsed);
    }
  } finally {
    tf.dispose([a, b]);
  }
  return flopsOf(matmul) / median(seconds) / 1e9;
}

/** GFLOP/s of a dense 2-D non-transposed n x n x n matmul on the current backend. */
export async function measureMatmulGflops(n = 1024, opts: MatmulBenchOptions = {}): Promise<number> {
  return measureMatmulCaseGflops(
    { name: `NN ${n}^3`, aShape: [n, n], bShape: [n, n], transposeA: false, transposeB: false }, opts);
}

/** GFLOP/s for each of `cases` (default: the GPT training shapes) on the current backend. */
export async function measureTrainingMatmuls(
  cases: readonly MatmulCase[] = TRAINING_MATMUL_CASES, opts: MatmulBenchOptions = {},
): Promise<Array<{ matmul: MatmulCase; gflops: number }>> {
  const results: Array<{ matmul: MatmulCase; gflops: number }> = [];
  for (const matmul of cases) results.push({ matmul, gflops: await measureMatmulCaseGflops(matmul, opts) });
  return results;
}

async function main(): Promise<void> {
  const backend = await initBackend(undefined, (line) => console.log(line));
  const cases: MatmulCase[] = [
    { name: 'NN 1024^3', aShape: [1024, 1024], bShape: [1024, 1024], transposeA: false, transposeB: false },
    { name: 'NT 1024^3', aShape: [1024, 1024], bShape: [1024, 1024], transposeA: false, transposeB: true },
    { name: 'TN 1024^3', aShape: [1024, 1024], bShape: [1024, 1024], transposeA: true, transposeB: false },
    ...TRAINING_MATMUL_CASES,
  ];
  if (backend !== 'wasm') {
    for (const { matmul, gflops } of await measureTrainingMatmuls(cases)) {
      console.log(`${matmul.name.padEnd(40)} ${gflops.toFixed(1).padStart(7)} GFLOP/s`);
    }
    return;
  }
  console.log(`${'GFLOP/s on wasm'.padEnd(40)} ${'stock'.padStart(7)} ${'ours'.padStart(7)} speed-up`);
  for (const matmul of cases) {
    restoreStockWasmKernels();
    // The stock slow path runs at ~1 GFLOP/s: fewer runs keep the table under a minute.
    const stock = await measureMatmulCaseGflops(matmul, { warmup: 1, runs: 3 });
    registerWasmTrainingKernels();
    const ours = await measureMatmulCaseGflops(matmul);
    console.log(`${matmul.name.padEnd(40)} ${stock.toFixed(1).padStart(7)} ${ours.toFixed(1).padStart(7)} ` +
      `${(ours / stock).toFixed(1).padStart(6)}x`);
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main();
}

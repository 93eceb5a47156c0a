/**
 * Implements: the GPU figures of `npm run bench` (section gpu): the webgpu backend's own matmul rate,
 * the model FLOP/s of a training step (hidden 256, and the gpt2-small preset at batch 8 x 1024) and
 * their ratio, and the same model's step in PyTorch eager float32 on the same GPU, timed in the same
 * run (bench/torch_step.py), as our step time over theirs.
 *
 * Why its own timing: a read of a whole result from a GPU costs more than the matmul (67 MB at
 * 0.83 GB/s against 6 ms for 4096^3 on the H200), so a chain of products is queued and one summed
 * value read at the end, the GPU's time alone.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import * as tf from '../src/tf.ts';
import { resolveModelConfig, type ModelConfigInput } from '../src/model/config.ts';
import { median } from './report.ts';
import { measureTrainingStep } from './step.ts';

export interface GpuBenchModel {
  key: string;
  model: ModelConfigInput;
  batchSize: number;
  seqLen: number;
}

/** GFLOP/s of n x n x n float32 products on the current backend, `chain` queued before one read. */
export async function measureGpuMatmulGflops(n: number, runs = 5, chain = 8): Promise<number> {
  const a = tf.randomNormal([n, n], 0, 1, 'float32', 1);
  const b = tf.randomNormal([n, n], 0, 1 / Math.sqrt(n), 'float32', 2);
  const seconds: number[] = [];
  try {
    for (let run = 0; run < runs + 1; run++) {
      const start = performance.now();
      const sums: tf.Tensor[] = [];
      for (let i = 0; i < chain; i++) {
        const product = tf.matMul(a, b);
        // One element's worth of read per product, computed on the GPU after it.
        sums.push(tf.slice(product, [0, 0], [1, 1]));
        product.dispose();
      }
      const total = tf.tidy(() => sums.reduce((sum, next) => tf.add(sum, next)));
      await total.data();
      tf.dispose([...sums, total]);
      if (run > 0) seconds.push((performance.now() - start) / 1000);
    }
  } finally {
    tf.dispose([a, b]);
  }
  return (chain * 2 * n ** 3) / median(seconds) / 1e9;
}

export interface TorchStep {
  stepMs: number;
  device: string;
}

/**
 * The same model's training step (forward, backward, Adam) in PyTorch eager float32 with TF32 off, on
 * the GPU, timed by bench/torch_step.py. Throws with the reason where python3 or torch is missing.
 */
export function measureTorchStep(model: GpuBenchModel, runs: number, say: (line: string) => void): Promise<TorchStep> {
  const config = resolveModelConfig(model.model);
  const script = fileURLToPath(new URL('./torch_step.py', import.meta.url));
  const args = [script, '--layers', String(config.numLayers), '--hidden', String(config.hiddenSize), '--heads', String(config.numAttentionHeads),
    '--vocab', String(config.vocabSize), '--positions', String(config.maxPositionEmbeddings), '--batch', String(model.batchSize), '--seq', String(model.seqLen), '--runs', String(runs)];
  return new Promise((resolve, reject) => {
    const child = spawn('python3', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => {
      err += chunk.toString();
      for (const line of chunk.toString().split('\n')) if (line.trim() !== '') say(`  torch: ${line}`);
    });
    child.on('error', (error) => reject(new Error(`python3 could not start (${error.message}): the PyTorch comparison needs python3 with torch`)));
    child.on('exit', (code) => {
      const last = out.trim().split('\n').pop() ?? '';
      if (code !== 0) return reject(new Error(`bench/torch_step.py exited with ${code}: ${err.trim().split('\n').pop() ?? ''}`));
      try {
        const parsed = JSON.parse(last) as { step_ms: number; device: string };
        resolve({ stepMs: parsed.step_ms, device: parsed.device });
      } catch {
        reject(new Error(`bench/torch_step.py printed no result line: ${last}`));
      }
    });
  });
}

export interface GpuStepFigures {
  stepMs: number;
  stepGflops: number;
}

/** Our step on the current (GPU) backend: the trainer's path, median of `runs` after one warm-up. */
export async function measureGpuStep(model: GpuBenchModel, runs: number, say: (line: string) => void): Promise<GpuStepFigures> {
  const step = await measureTrainingStep({ model: model.model, batchSize: model.batchSize, seqLen: model.seqLen, warmup: 1, runs, onProgress: say });
  return { stepMs: step.stepMs, stepGflops: step.stepGflops };
}

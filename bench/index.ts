/**
 * Implements: `npm run bench`: figures measured side by side in one run on this machine, each with its
 * target. Now: the backend's dense 2-D matmul GFLOP/s, a training step's achieved model GFLOP/s, and
 * their ratio (step efficiency). `--json` prints, last, one JSON object with every figure.
 */
import * as tf from '../src/tf.ts';
import { initBackend } from '../src/backend/select.ts';
import { measureMatmulGflops } from './matmul.ts';
import { measureTrainingStep } from './step.ts';

const json = process.argv.includes('--json');
const say = (line: string) => process.stderr.write(line + '\n');

tf.enableProdMode();
const backend = await initBackend(undefined, say);

say('measuring dense 2-D matmul 1024x1024x1024 ...');
const matmulGflops = await measureMatmulGflops(1024);
say(`  ${matmulGflops.toFixed(1)} GFLOP/s`);

const STEP_EFFICIENCY_TARGET = 0.4;
const stepModel = { numLayers: 4, hiddenSize: 256, numAttentionHeads: 4, maxPositionEmbeddings: 128 };
say('measuring a training step: GPT 4 layers, hidden 256, 4 heads, vocab 50304, batch 8 x 128 tokens ...');
const step = measureTrainingStep({ model: stepModel, batchSize: 8, seqLen: 128, onProgress: say });
say(`  ${step.stepMs.toFixed(0)} ms/step, ${step.stepGflops.toFixed(1)} model GFLOP/s`);

// Re-measured after the step so that a machine growing busier during the run shows in both numbers.
const matmulAfter = await measureMatmulGflops(1024);
const matmulMean = (matmulGflops + matmulAfter) / 2;
const figures = {
  backend,
  matmul_gflops: round(matmulMean),
  step_gflops: round(step.stepGflops),
  step_ms: round(step.stepMs),
  step_efficiency: round(step.stepGflops / matmulMean, 3),
  step_efficiency_target: STEP_EFFICIENCY_TARGET,
  tensor_growth: step.tensorGrowth,
};

say('');
say('figure            value     target');
say(`matmul_gflops     ${pad(figures.matmul_gflops)}`);
say(`step_gflops       ${pad(figures.step_gflops)}`);
say(`step_efficiency   ${pad(figures.step_efficiency)}  >= ${STEP_EFFICIENCY_TARGET} ${figures.step_efficiency >= STEP_EFFICIENCY_TARGET ? 'met' : 'NOT met'}`);
say(`tensor_growth     ${pad(figures.tensor_growth)}  0 ${figures.tensor_growth === 0 ? 'met' : 'NOT met'}`);
if (json) process.stdout.write(JSON.stringify(figures) + '\n');

function round(value: number, digits = 2): number {
  return Math.round(value * 10 ** digits) / 10 ** digits;
}

function pad(value: number): string {
  return String(value).padEnd(8);
}

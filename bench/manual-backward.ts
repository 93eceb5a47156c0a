/**
 * Implements: `node --import tsx bench/manual-backward.ts [--runs N] [--json]`: time per forward+backward
 * of the hand-written backward (src/model/manual) against tfjs autodiff on the wasm backend, for the step
 * bench's model (GPT 4 layers, hidden 256, 4 heads, vocab 50304, batch 8 x 128), in two settings:
 *   - whole model: tf.variableGrads over GPT.loss vs modelLossAndGrads;
 *   - pipeline-stage-like, for the first and the last stage of pipeline 2: a forward, then the
 *     recompute backward a stage does today (forward again under the tape + VJP with the output
 *     gradient, or the loss on the last stage), vs sliceForward with saved + sliceBackward.
 */
import * as tf from '../src/tf.ts';
import { initBackend } from '../src/backend/select.ts';
import { resolveModelConfig } from '../src/model/config.ts';
import { GPT, type TokenBatch } from '../src/model/gpt.ts';
import { modelLossAndGrads, sliceBackward, sliceForward } from '../src/model/manual/slice.ts';
import { fullModelSlice, sliceForLayers } from '../src/model/params.ts';
import { benchBatch } from './step.ts';

const args = process.argv.slice(2);
const json = args.includes('--json');
const runsAt = args.indexOf('--runs');
const runs = runsAt >= 0 ? Number(args[runsAt + 1]) : 3;
const say = (line: string) => process.stderr.write(line + '\n');

tf.enableProdMode();
await initBackend('wasm', say);

const config = resolveModelConfig({ numLayers: 4, hiddenSize: 256, numAttentionHeads: 4, maxPositionEmbeddings: 128 });
const batchSize = 8;
const seqLen = 128;
const batch: TokenBatch = benchBatch(batchSize, seqLen);

/**
 * Times `a` and `b` in alternating rounds (a b, b a, a b, ...) after one warm-up each, so a machine that
 * grows busier or quieter during the run weighs on both alike. Returns their medians and the median of
 * the per-round ratios a/b; warns when either leaks tensors.
 */
function timePair(labelA: string, a: () => void, labelB: string, b: () => void): { aMs: number; bMs: number; ratio: number } {
  a();
  b();
  const tensorsBefore = tf.memory().numTensors;
  const timesA: number[] = [];
  const timesB: number[] = [];
  const ratios: number[] = [];
  const timed = (work: () => void, into: number[]) => {
    const start = performance.now();
    work();
    into.push(performance.now() - start);
  };
  for (let round = 0; round < runs; round++) {
    if (round % 2 === 0) {
      timed(a, timesA);
      timed(b, timesB);
    } else {
      timed(b, timesB);
      timed(a, timesA);
    }
    ratios.push(timesA[round] / timesB[round]);
  }
  const growth = tf.memory().numTensors - tensorsBefore;
  if (growth !== 0) say(`  WARNING: ${growth} tensors leaked over ${runs} rounds of ${labelA} and ${labelB}`);
  const show = (label: string, times: number[]) =>
    say(`  ${label.padEnd(34)} ${median(times).toFixed(0).padStart(6)} ms  (runs: ${times.map((t) => t.toFixed(0)).join(', ')})`);
  show(labelA, timesA);
  show(labelB, timesB);
  return { aMs: median(timesA), bMs: median(timesB), ratio: median(ratios) };
}

function median(values: number[]): number {
  const sorted = [...values].sort((x, y) => x - y);
  return sorted[Math.floor(sorted.length / 2)];
}

/** Waits for every gradient's data, as an optimizer would read them, then frees them. */
function settle(tensors: tf.Tensor[]): void {
  for (const t of tensors) t.dataSync();
  tf.dispose(tensors);
}

say(`whole model: GPT ${config.numLayers} layers, hidden ${config.hiddenSize}, vocab ${config.vocabSize}, batch ${batchSize} x ${seqLen}`);
const model = new GPT(config, fullModelSlice(config), 1);
const variables = model.variables();
const whole = timePair('autodiff (variableGrads)', () => {
  const { value, grads } = tf.variableGrads(() => model.loss(batch), variables);
  settle([value, ...Object.values(grads)]);
}, 'manual (saved + backward)', () => {
  const { loss, grads } = modelLossAndGrads(model, batch);
  settle([loss, ...grads.values()]);
});
model.dispose();

const stageLayers = config.numLayers / 2;

/** A pipeline stage's forward then its backward, by recompute (as src/stages/stage.ts does today) and by hand. */
function stagePair(stage: GPT, hiddenIn: tf.Tensor3D | undefined, outputGrad: tf.Tensor3D | undefined) {
  const stageVariables = stage.variables();
  return timePair('autodiff forward + recompute bwd', () => {
    const output = tf.tidy(() => stage.forward(batch, hiddenIn, {}));
    output.dataSync();
    output.dispose();
    const input = hiddenIn === undefined ? undefined : tf.variable(hiddenIn, true);
    const { value, grads } = tf.variableGrads(() => {
      const out = stage.forward(batch, input, {});
      return (outputGrad === undefined ? out : tf.sum(tf.mul(out, outputGrad))) as tf.Scalar;
    }, input === undefined ? stageVariables : [...stageVariables, input]);
    settle([value, ...Object.values(grads)]);
    input?.dispose();
  }, 'manual forward (saved) + backward', () => {
    const { output, saved } = sliceForward(stage, batch, hiddenIn);
    output.dataSync();
    output.dispose();
    const { inputGrad, grads } = sliceBackward(stage, saved, outputGrad);
    settle(inputGrad === undefined ? [...grads.values()] : [inputGrad, ...grads.values()]);
  });
}

const hiddenGrad = tf.randomNormal([batchSize, seqLen, config.hiddenSize], 0, 1e-3, 'float32', 5) as tf.Tensor3D;
const hiddenIn = tf.randomNormal([batchSize, seqLen, config.hiddenSize], 0, 1, 'float32', 6) as tf.Tensor3D;
say(`pipeline-stage-like, first stage (embedding + layers 0-${stageLayers - 1}, output gradient given)`);
const firstStage = new GPT(config, sliceForLayers(config, 0, stageLayers), 1);
const first = stagePair(firstStage, undefined, hiddenGrad);
firstStage.dispose();
say(`pipeline-stage-like, last stage (layers ${stageLayers}-${config.numLayers - 1} + head, hidden states given)`);
const lastStage = new GPT(config, sliceForLayers(config, stageLayers, config.numLayers), 1);
const last = stagePair(lastStage, hiddenIn, undefined);
lastStage.dispose();
tf.dispose([hiddenGrad, hiddenIn]);

const figures = {
  backend: tf.getBackend(),
  runs,
  autodiff_ms: Math.round(whole.aMs),
  manual_ms: Math.round(whole.bMs),
  manual_speedup: Math.round(whole.ratio * 100) / 100,
  first_stage_recompute_ms: Math.round(first.aMs),
  first_stage_manual_ms: Math.round(first.bMs),
  first_stage_speedup: Math.round(first.ratio * 100) / 100,
  last_stage_recompute_ms: Math.round(last.aMs),
  last_stage_manual_ms: Math.round(last.bMs),
  last_stage_speedup: Math.round(last.ratio * 100) / 100,
};
say('');
say('setting                 autodiff   manual   autodiff/manual (median of per-round ratios)');
say(`whole model fwd+bwd     ${String(figures.autodiff_ms).padStart(6)} ms ${String(figures.manual_ms).padStart(6)} ms   ${figures.manual_speedup}x`);
say(`first stage fwd + bwd   ${String(figures.first_stage_recompute_ms).padStart(6)} ms ${String(figures.first_stage_manual_ms).padStart(6)} ms   ${figures.first_stage_speedup}x  (autodiff recomputes the forward)`);
say(`last stage fwd + bwd    ${String(figures.last_stage_recompute_ms).padStart(6)} ms ${String(figures.last_stage_manual_ms).padStart(6)} ms   ${figures.last_stage_speedup}x  (autodiff recomputes the forward)`);
if (json) process.stdout.write(JSON.stringify(figures) + '\n');

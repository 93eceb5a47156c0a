/**
 * The tiny preset trained on webgpu (Dawn's OpenGL ES backend over Mesa's software rasterizer on
 * machines without a GPU, a hardware adapter where there is one) gives the wasm run's losses within
 * 1e-5 relative over 20 steps: in one process, in a pp2 x tp2 layout simulated in one process (every
 * rank on the one device), and in worker processes that each open their own device on the one adapter.
 * Samples are cut to 16 tokens (examples/tiny.json has 64): Mesa's software rasterizer takes seconds a
 * step, about in proportion to the rows (measured 7.3 s a step at 32 tokens, 3.7 at 16), and these are
 * the suite's longest tests.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, test } from 'node:test';
import { assertSameLosses, losses, REPO, runCli } from '../support/cli.ts';

const TINY = join(REPO, 'examples', 'tiny.json');
const STEPS = 20;
const read = (path: string) => readFileSync(path, 'utf8');
const outDir = (name: string) => join(mkdtempSync(join(tmpdir(), 'gpt-hybrid-webgpu-')), name);
let wasm: number[];

async function train(backend: 'webgpu' | 'wasm', steps: number, extra: string[] = []): Promise<{ losses: number[]; output: string }> {
  const out = outDir(backend);
  const { code, output } = await runCli(['train', TINY, '--backend', backend, '--steps', String(steps), '--set', 'seqLen=16', '--out', out, ...extra], {}, 600_000);
  assert.equal(code, 0, output);
  return { losses: losses(join(out, 'metrics.jsonl'), read), output };
}

before(async () => {
  wasm = (await train('wasm', STEPS)).losses;
  assert.equal(wasm.length, STEPS);
});

test('webgpu - the tiny preset in one process: the wasm losses within 1e-5 over 20 steps', async () => {
  const run = await train('webgpu', STEPS);
  assertSameLosses(run.losses, wasm, 1e-5);
});

test('webgpu - pp2 x tp2 simulated in one process: the wasm losses within 1e-5 over 20 steps', async () => {
  const layout = ['parallel.pipeline=2', 'parallel.tensor.size=2', 'numMicroBatches=2'].flatMap((s) => ['--set', s]);
  const run = await train('webgpu', STEPS, ['--simulate', ...layout]);
  assert.equal((run.output.match(/rank \d+ registered/g) ?? []).length, 4);
  assertSameLosses(run.losses, wasm, 1e-5);
});

test('webgpu - pp2 in two worker processes, each with its own device on the one adapter: the wasm losses', async () => {
  const run = await train('webgpu', 3, ['--set', 'parallel.pipeline=2', '--set', 'numMicroBatches=2']);
  const pids = new Set([...run.output.matchAll(/rank \d+ registered \(node 0, pid (\d+)/g)].map((match) => match[1]));
  assert.equal(pids.size, 2, `two worker processes, one per rank:\n${run.output}`);
  assertSameLosses(run.losses, wasm.slice(0, 3), 1e-5);
});

/**
 * Implements: `tensor_growth` and `rss_growth_mb` over 200 steps: a fresh process runs the real Trainer
 * (data path, hooks, Adam) on the tests' tiny config (batch 2: a leak shows per step, not per token) and compares tf.memory().numTensors and the
 * resident set size after the warm-up steps (when the wasm heap has grown to its working size) with the
 * same after 200 more steps.
 *
 * Run as `node --import tsx bench/memory.ts --child <config> <warm-up steps> <steps>`, it is that process.
 */
import { rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '../src/tf.ts';
import { Trainer } from '../src/train/trainer.ts';
import { writeTestConfig } from '../test/support/cli.ts';
import { runChild } from './peers.ts';
import { setUpTraining } from './training-setup.ts';

const SCRIPT = fileURLToPath(import.meta.url);

export interface MemoryResult {
  steps: number;
  tensorGrowth: number;
  rssGrowthMb: number;
  rssStartMb: number;
  msPerStep: number;
}

export async function measureMemory(options: { warmup: number; steps: number }, say: (line: string) => void): Promise<MemoryResult> {
  say(`  the tiny config in a fresh process: ${options.warmup} warm-up steps, then ${options.steps} measured ...`);
  const config = writeTestConfig({ steps: options.warmup + options.steps, batchSize: 2 });
  let result: MemoryResult;
  try {
    result = (await runChild(SCRIPT, ['--child', config, String(options.warmup), String(options.steps)], 300_000)) as unknown as MemoryResult;
  } finally {
    rmSync(dirname(config), { recursive: true, force: true });
  }
  say(`    ${result.tensorGrowth} tensors, ${result.rssGrowthMb.toFixed(1)} MB resident (from ${result.rssStartMb.toFixed(0)} MB), ${result.msPerStep.toFixed(0)} ms/step`);
  return result;
}

async function child(args: string[]): Promise<void> {
  const [configPath, warmupText, stepsText] = args;
  const warmup = Number(warmupText);
  const steps = Number(stepsText);
  const { config, dataset, model } = await setUpTraining(configPath);
  const rssMb = () => process.memoryUsage().rss / 2 ** 20;
  let start = { tensors: 0, rssMb: 0, ms: 0 };
  let end = start;
  const trainer = new Trainer({
    config,
    model,
    dataset,
    totalSteps: warmup + steps,
    log: () => {},
    hooks: [
      {
        name: 'memory',
        afterStep: (_state, result) => {
          const now = { tensors: tf.memory().numTensors, rssMb: rssMb(), ms: performance.now() };
          if (result.step === warmup) start = now;
          if (result.step === warmup + steps) end = now;
        },
      },
    ],
  });
  await trainer.fit();
  trainer.dispose();
  model.dispose();
  const result: MemoryResult = {
    steps,
    tensorGrowth: end.tensors - start.tensors,
    rssGrowthMb: end.rssMb - start.rssMb,
    rssStartMb: start.rssMb,
    msPerStep: (end.ms - start.ms) / steps,
  };
  process.stdout.write(JSON.stringify(result) + '\n');
}

if (process.argv[2] === '--child') await child(process.argv.slice(3));

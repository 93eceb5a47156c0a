/**
 * The learning rate schedules (train/lr-schedule.ts): the formulas against values worked out by hand,
 * the config's checks, and whole runs through the CLI: the lr of every step in metrics.jsonl is the
 * formula's, a run resumed at step 10 repeats steps 11-20 of the uninterrupted run bit for bit, and a
 * pipeline job (simulated pp2) applies the same rates (its losses are the single-process run's).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { resolveConfig } from '../../src/config/resolve.ts';
import { learningRateAt, type LrScheduleConfig } from '../../src/train/lr-schedule.ts';
import { assertSameLosses, runCli, writeTestConfig } from '../support/cli.ts';

const base: LrScheduleConfig = { lr: 1, schedule: 'constant', warmupSteps: 0, minLr: 0.1 };
const rates = (config: LrScheduleConfig, steps: number, runSteps = steps) => Array.from({ length: steps }, (_, i) => learningRateAt(config, i + 1, runSteps));
const close = (actual: number[], expected: number[]) => actual.forEach((value, i) => assert.ok(Math.abs(value - expected[i]!) < 1e-12, `step ${i + 1}: ${value} vs ${expected[i]}`));

test('formulas - warmup rises linearly from 0 and the first step already moves the weights', () => {
  close(rates({ ...base, warmupSteps: 4 }, 6), [0.25, 0.5, 0.75, 1, 1, 1]);
});

test('formulas - linear and cosine decay from lr at the end of warmup to minLr at decaySteps, and stay there', () => {
  // warmup 2, decaySteps 6: r = (step - 2) / 4 after warmup.
  close(rates({ ...base, schedule: 'linear', warmupSteps: 2, decaySteps: 6 }, 8), [0.5, 1, 0.775, 0.55, 0.325, 0.1, 0.1, 0.1]);
  const cos = (r: number) => 0.1 + 0.9 * 0.5 * (1 + Math.cos(Math.PI * r));
  close(rates({ ...base, schedule: 'cosine', warmupSteps: 2, decaySteps: 6 }, 8), [0.5, 1, cos(0.25), cos(0.5), cos(0.75), 0.1, 0.1, 0.1]);
  assert.equal(learningRateAt({ ...base, schedule: 'cosine', warmupSteps: 2, decaySteps: 6 }, 4, 99), 0.55, 'cos(pi/2): halfway between lr and minLr');
  // Without decaySteps the decay spans the run.
  close(rates({ ...base, schedule: 'linear' }, 4), [1 - 0.9 * 0.25, 1 - 0.9 * 0.5, 1 - 0.9 * 0.75, 0.1]);
});

test('formulas - inverse-square-root falls as 1/sqrt(step) after warmup, floored at minLr', () => {
  close(rates({ ...base, schedule: 'inverse-square-root', warmupSteps: 4, minLr: 0 }, 6), [0.25, 0.5, 0.75, 1, Math.sqrt(4 / 5), Math.sqrt(4 / 6)]);
  assert.equal(learningRateAt({ ...base, schedule: 'inverse-square-root', minLr: 0.3 }, 100, 100), 0.3);
});

test('config - a schedule that cannot work is refused naming the keys', () => {
  const config = (optimizer: Record<string, unknown>) => resolveConfig({ model: { preset: 'tiny' }, steps: 20, optimizer, data: { path: 'x.jsonl' } }, { checkDataFile: false });
  assert.throws(() => config({ lr: 1e-3, minLr: 1e-2, schedule: 'cosine' }), /optimizer\.minLr \(0\.01\) is above optimizer\.lr \(0\.001\)/);
  assert.throws(() => config({ schedule: 'cosine', warmupSteps: 20 }), /the run's 20 steps \(decaySteps' default\) must exceed optimizer\.warmupSteps \(20\)/);
  assert.throws(() => config({ schedule: 'linear', warmupSteps: 5, decaySteps: 5 }), /optimizer\.decaySteps \(5\) must exceed optimizer\.warmupSteps \(5\)/);
  assert.throws(() => config({ schedule: 'cosinus' }), /optimizer\.schedule.*cosine/);
  assert.equal(config({ schedule: 'cosine', warmupSteps: 5, minLr: 3e-4, lr: 3e-3 }).optimizer.decaySteps, undefined);
});

const COSINE = ['optimizer.schedule=cosine', 'optimizer.warmupSteps=5', 'optimizer.minLr=3e-4', 'optimizer.lr=3e-3', 'steps=20'];
const configFile = writeTestConfig({ batchSize: 8, seqLen: 16 });
const read = (file: string) => readFileSync(file, 'utf8').trim().split('\n').map((line) => JSON.parse(line) as { step: number; loss: number; lr: number });

async function train(out: string, sets: string[], extra: string[] = []): Promise<ReturnType<typeof read>> {
  const { code, output } = await runCli(['train', configFile, '--out', out, '--quiet', ...sets.flatMap((s) => ['--set', s]), ...extra], { NATS_URL: 'nats://127.0.0.1:1' });
  assert.equal(code, 0, output);
  return read(join(out, 'metrics.jsonl'));
}

test('run - cosine with warmup: every step of metrics.jsonl has the formula\'s lr, and resuming at step 10 repeats steps 11-20 bit for bit', async () => {
  const root = mkdtempSync(join(tmpdir(), 'gpt-hybrid-lr-'));
  const whole = await train(join(root, 'whole'), [...COSINE, 'checkpoint.every=10']);
  const formula = { lr: 3e-3, schedule: 'cosine', warmupSteps: 5, minLr: 3e-4 } as const;
  assert.deepEqual(whole.map((m) => m.step), Array.from({ length: 20 }, (_, i) => i + 1));
  assert.deepEqual(whole.map((m) => m.lr), rates(formula, 20));
  assert.equal(whole[4]!.lr, 3e-3);
  assert.equal(whole[19]!.lr, 3e-4);

  const resumed = await train(join(root, 'resumed'), COSINE, ['--resume', join(root, 'whole', 'checkpoints', 'step-000010')]);
  assert.deepEqual(resumed.map((m) => m.step), Array.from({ length: 10 }, (_, i) => i + 11));
  assert.deepEqual(resumed.map((m) => [m.loss, m.lr]), whole.slice(10).map((m) => [m.loss, m.lr]));

  // The schedule reaches the weights: the same run at a constant lr learns differently.
  const constant = await train(join(root, 'constant'), ['optimizer.lr=3e-3', 'steps=20']);
  assert.ok(Math.abs(constant[19]!.loss - whole[19]!.loss) > 1e-3 * whole[19]!.loss, `${constant[19]!.loss} vs ${whole[19]!.loss}`);

  // A pipeline applies the same rates on every stage: pp2 (simulated ranks) gives the single-process losses.
  const pp2 = await train(join(root, 'pp2'), [...COSINE, 'parallel.pipeline=2', 'numMicroBatches=2'], ['--simulate']);
  assert.deepEqual(pp2.map((m) => m.lr), rates(formula, 20));
  assertSameLosses(pp2.map((m) => m.loss), whole.map((m) => m.loss));
});

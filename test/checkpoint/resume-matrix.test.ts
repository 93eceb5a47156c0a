/**
 * End to end over real worker processes and a private NATS server: resuming a checkpoint continues a run
 * exactly, in layouts (data, pipeline, tensor) = (1,1,1), (1,2,2) and (2,2,1); a (1,2,2) checkpoint loads
 * into (1,1,1) and (2,1,1) with losses within 1e-4 relative; `checkpoint convert` to (1,1,1) resumes to the
 * same losses as load-time resharding. Each uninterrupted run saves the checkpoint at its middle step
 * (checkpoint.every), so it serves as both the reference and the source.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { startNatsServer, type NatsServerHandle } from '../../src/comm/nats-server.ts';
import { assertSameLosses, runCli, writeTestConfig } from '../support/cli.ts';

const STEPS = 4;
const MIDDLE = 2;
const config = writeTestConfig({ steps: STEPS });
const folder = mkdtempSync(join(tmpdir(), 'gpt-hybrid-resume-'));
let server: NatsServerHandle;

/** Every layout keeps the global batch at 4 samples (batchSize x data), so all runs see the same data. */
const LAYOUTS = {
  '1,1,1': [],
  '1,2,2': ['--set', 'parallel.pipeline=2', '--set', 'parallel.tensor.size=2', '--set', 'numMicroBatches=4'],
  '2,2,1': ['--set', 'parallel.data=2', '--set', 'parallel.pipeline=2', '--set', 'batchSize=2', '--set', 'numMicroBatches=2'],
  '2,1,1': ['--set', 'parallel.data=2', '--set', 'batchSize=2'],
} as const;
type Layout = keyof typeof LAYOUTS;

/** `train` in a layout, into DIR/<name>; fails the test unless it exits 0. Returns the run folder and output. */
async function train(name: string, layout: Layout, extra: string[]): Promise<{ out: string; output: string }> {
  const out = join(folder, name);
  const { code, output } = await runCli(['train', config, '--out', out, ...LAYOUTS[layout], ...extra, '--nats', server.url]);
  assert.equal(code, 0, output);
  return { out, output };
}

/** (step, loss) of every line of a run's metrics.jsonl. */
function metrics(out: string): { steps: number[]; losses: number[] } {
  const lines = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((line) => JSON.parse(line) as { step: number; loss: number });
  return { steps: lines.map((l) => l.step), losses: lines.map((l) => l.loss) };
}

const middleCheckpoint = (out: string) => join(out, 'checkpoints', `step-${String(MIDDLE).padStart(6, '0')}`);
const uninterrupted = new Map<Layout, { out: string; losses: number[] }>();

/** The uninterrupted run of a layout, saving at the middle step; run once and shared by the tests. */
async function uninterruptedRun(layout: Layout): Promise<{ out: string; losses: number[] }> {
  let run = uninterrupted.get(layout);
  if (run === undefined) {
    const { out, output } = await train(`full-${layout}`, layout, ['--set', `checkpoint.every=${MIDDLE}`]);
    assert.match(output, new RegExp(`checkpoint of step ${MIDDLE}: .*step-0+${MIDDLE}`));
    const { steps, losses } = metrics(out);
    assert.deepEqual(steps, [1, 2, 3, 4]);
    run = { out, losses };
    uninterrupted.set(layout, run);
  }
  return run;
}

/** Resumes `checkpoint` in `layout` up to STEPS into a fresh folder; returns the losses of the steps it ran. */
async function resume(name: string, layout: Layout, checkpoint: string): Promise<number[]> {
  const { out, output } = await train(name, layout, ['--resume', checkpoint, '--steps', String(STEPS), '--quiet']);
  const { steps, losses } = metrics(out);
  assert.deepEqual(steps, [3, 4], output);
  return losses;
}

before(async () => {
  server = await startNatsServer();
});

after(async () => {
  await server.stop();
  // Every run leaves checkpoints of about 40 MB per rank.
  rmSync(folder, { recursive: true, force: true });
});

test('resume - (1,1,1): resumed from step 2 without --out, the run goes on in its folder: steps 3-4 replace the old ones, bit-identical', async () => {
  const full = await uninterruptedRun('1,1,1');
  // Mark the lines after the checkpoint: resuming must drop them and append the steps it runs again.
  const metricsPath = join(full.out, 'metrics.jsonl');
  const lines = readFileSync(metricsPath, 'utf8').trim().split('\n').map((line) => JSON.parse(line) as { step: number; loss: number });
  writeFileSync(metricsPath, lines.map((line) => JSON.stringify(line.step > MIDDLE ? { ...line, loss: -1 } : line) + '\n').join(''));
  const resumed = await runCli(['train', config, '--resume', middleCheckpoint(full.out), '--steps', String(STEPS), '--nats', server.url]);
  assert.equal(resumed.code, 0, resumed.output);
  assert.ok(resumed.output.includes(`run folder: ${full.out}\n`), resumed.output);
  assert.match(resumed.output, new RegExp(`continuing after step ${MIDDLE}`));
  const { steps, losses } = metrics(full.out);
  assert.deepEqual(steps, [1, 2, 3, 4]);
  assert.deepEqual(losses, full.losses);
  // Resuming the last checkpoint with nothing left to run says how to go on and touches nothing.
  const done = await runCli(['train', config, '--resume', full.out, '--steps', String(STEPS), '--nats', server.url]);
  assert.equal(done.code, 1, done.output);
  assert.match(done.output, new RegExp(`the checkpoint is at step ${STEPS}, not before the last step ${STEPS}: pass --steps N with N > ${STEPS}`));
  assert.deepEqual(metrics(full.out).losses, full.losses);
});

for (const layout of ['1,2,2', '2,2,1'] as const) {
  test(`resume - (${layout}) over 4 workers: resumed from step 2, steps 3-4 are bit-identical to the uninterrupted run`, async () => {
    const full = await uninterruptedRun(layout);
    const losses = await resume(`resumed-${layout}`, layout, middleCheckpoint(full.out));
    assert.deepEqual(losses, full.losses.slice(MIDDLE));
  });
}

test('reshard - the (1,2,2) checkpoint resumed as (1,1,1) and as (2,1,1) gives the same losses within 1e-4; converted to (1,1,1) it gives exactly the load-time reshard', async () => {
  const full = await uninterruptedRun('1,2,2');
  const expected = full.losses.slice(MIDDLE);
  const single = await resume('reshard-1,1,1', '1,1,1', middleCheckpoint(full.out));
  assertSameLosses(single, expected);
  assertSameLosses(await resume('reshard-2,1,1', '2,1,1', middleCheckpoint(full.out)), expected);

  const converted = join(folder, 'converted-1,1,1');
  const convert = await runCli(['checkpoint', 'convert', middleCheckpoint(full.out), '--out', converted, '--set', 'parallel.pipeline=1', '--set', 'parallel.tensor.size=1']);
  assert.equal(convert.code, 0, convert.output);
  assert.match(convert.output, /to data 1 x pipeline 1 x tensor 1/);
  const inspect = await runCli(['checkpoint', 'inspect', converted, '--json']);
  assert.equal(inspect.code, 0, inspect.output);
  const report = JSON.parse(inspect.output);
  assert.equal(report.ok, true);
  assert.equal(report.step, MIDDLE);
  assert.deepEqual(report.layout, { data: 1, pipeline: 1, tensor: 1, order: 'tp-dp-pp', world: 1 });
  // The converted run folder resumes like any run folder (its latest checkpoint).
  assert.deepEqual(await resume('converted-resumed', '1,1,1', converted), single);
});

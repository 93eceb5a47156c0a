/**
 * End to end over real worker processes and a private NATS server: a loss that overflows in step 2
 * (Adam's first step moves every weight by about lr = 1e30) stops a pipeline-2 and a data-2 job with
 * the step and what was not finite, without restarting from a checkpoint that would only repeat it;
 * with nonFinite = "skip" the job skips those updates on every rank and finishes.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { startNatsServer, type NatsServerHandle } from '../../src/comm/nats-server.ts';
import { losses, runCli, writeTestConfig } from '../support/cli.ts';

let server: NatsServerHandle;
const config = writeTestConfig({ optimizer: { lr: 1e30 }, checkpoint: { every: 1 } });
const outDir = (name: string) => join(mkdtempSync(join(tmpdir(), 'gpt-hybrid-nonfinite-')), name);
const read = (path: string) => readFileSync(path, 'utf8');

before(async () => {
  server = await startNatsServer();
});

after(async () => {
  await server.stop();
});

for (const [layout, args] of [
  ['pipeline 2', ['--set', 'parallel.pipeline=2', '--set', 'numMicroBatches=2']],
  ['data 2', ['--set', 'parallel.data=2', '--set', 'batchSize=2']],
] as const) {
  test(`non-finite - ${layout}: "error" ends the job non-zero naming step 2, keeps the step-1 checkpoint, and does not restart`, async () => {
    const out = outDir('error');
    const { code, output } = await runCli(['train', config, '--out', out, ...args, '--nats', server.url]);
    assert.notEqual(code, 0, output);
    assert.match(output, /job failed: rank \d failed: step 2: the loss is NaN and the gradient norm is NaN; the update was not applied, so the weights \(and any checkpoint\) stay at step 1/);
    assert.doesNotMatch(output, /restart 1 of/);
    assert.match(output, /checkpoint of step 1: /);
    assert.doesNotMatch(output, /checkpoint of step 2: /);
    const recorded = losses(join(out, 'metrics.jsonl'), read);
    assert.equal(recorded.length, 1);
    assert.ok(Number.isFinite(recorded[0]));
  });
}

test('non-finite - pipeline 2: "skip" skips the diverging updates on every rank, logs them once and finishes with exit 0', async () => {
  const out = outDir('skip');
  const { code, output } = await runCli(['train', config, '--out', out, '--set', 'parallel.pipeline=2', '--set', 'numMicroBatches=2', '--set', 'nonFinite=skip', '--nats', server.url]);
  assert.equal(code, 0, output);
  assert.equal(output.match(/step 2: the loss is NaN and the gradient norm is NaN: update skipped \(nonFinite = "skip"; 1 skipped so far\)/g)?.length, 1, output);
  assert.match(output, /skipped 3 of 4 steps whose loss or gradient norm was not finite/);
  const recorded = losses(join(out, 'metrics.jsonl'), read);
  assert.equal(recorded.length, 4);
  assert.ok(Number.isFinite(recorded[0]));
  // metrics.jsonl writes a NaN loss as null.
  assert.deepEqual(recorded.slice(1), [null, null, null]);
  // The running counts of skipped and nan steps, in metrics.jsonl and the log line.
  const records = read(join(out, 'metrics.jsonl')).trim().split('\n').map((line) => JSON.parse(line) as { skipped_steps: number; nan_steps: number; rss_mb: number });
  assert.deepEqual(records.map((r) => [r.skipped_steps, r.nan_steps]), [[0, 0], [1, 1], [2, 2], [3, 3]]);
  assert.ok(records.every((r) => r.rss_mb > 50), 'every step records the reporting rank\'s resident memory');
  assert.match(output, /step 4\/4  consumed samples \d+ .* skipped 3  nan 3\n/);
  // Both stages hold the same tied embedding after the skips: neither updated alone.
  const checksums = [...output.matchAll(/tied word embedding sha256 ([0-9a-f]{64})/g)].map((m) => m[1]);
  assert.equal(checksums.length, 2, output);
  assert.equal(checksums[0], checksums[1]);
});

/**
 * Whole jobs with the zero-bubble schedules as simulated actors (`--simulate`: every rank's stage,
 * scheduler and SharedWeight actors in this process over the in-process transport), through the CLI:
 * the scheduler actor sends I and W actions, the stage actors check them against their own lowering and
 * run them, and the losses are the single-process run's within 1e-4 relative. One zbv job runs as real
 * worker processes over a private NATS server: the V's turn on the last stage is a message to itself.
 * auto-zb's jobs switch from zb-h1 to their own order at step 3, every stage actor with them.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { startNatsServer, type NatsServerHandle } from '../../src/comm/nats-server.ts';
import { assertSameLosses, losses, runCli, singleProcessLosses, writeTestConfig } from '../support/cli.ts';

const configFile = writeTestConfig();
const outDir = (name: string) => join(mkdtempSync(join(tmpdir(), 'gpt-hybrid-zb-')), name);
const read = (path: string) => readFileSync(path, 'utf8');
let reference: number[];

before(async () => {
  reference = await singleProcessLosses(configFile, ['batchSize=8']);
});

async function simulated(sets: string[]): Promise<{ losses: number[]; output: string }> {
  const out = outDir('sim');
  const { code, output } = await runCli(['train', configFile, '--simulate', '--out', out, ...sets.flatMap((s) => ['--set', s])], { NATS_URL: 'nats://127.0.0.1:1' });
  assert.equal(code, 0, output);
  return { losses: losses(join(out, 'metrics.jsonl'), read), output };
}

test('simulate - zb-h1 on pp2, and on pp2 x tp2 x dp2: the single-process losses', async () => {
  const pp2 = await simulated(['schedule=zb-h1', 'parallel.pipeline=2', 'numMicroBatches=4', 'batchSize=8']);
  assertSameLosses(pp2.losses, reference);
  assert.match(pp2.output, /measured bubble [\d.]+, theoretical 0\.077 \(zb-h1, p=2, m=4/);
  const hybrid = await simulated(['schedule=zb-h1', 'parallel.pipeline=2', 'parallel.tensor.size=2', 'parallel.data=2', 'numMicroBatches=2', 'batchSize=4']);
  assertSameLosses(hybrid.losses, reference);
});

test('simulate - zbv on pp2 (stage 0 holds the embedding and the head and reports the loss), and on pp2 x tp2 x dp2: the single-process losses', async () => {
  const pp2 = await simulated(['schedule=zbv', 'numChunks=2', 'parallel.pipeline=2', 'numMicroBatches=4', 'batchSize=8']);
  assertSameLosses(pp2.losses, reference);
  assert.match(pp2.output, /stage 0: layers \[0, 1\) \[3, 4\)/);
  assert.match(pp2.output, /measured bubble [\d.]+, theoretical 0\.040 \(zbv, p=2, m=4, chunks=2\)/);
  const hybrid = await simulated(['schedule=zbv', 'numChunks=2', 'parallel.pipeline=2', 'parallel.tensor.size=2', 'parallel.data=2', 'numMicroBatches=2', 'batchSize=4']);
  assertSameLosses(hybrid.losses, reference);
});

test('simulate - auto-zb on pp2, and on pp2 x tp2 x dp2: zb-h1 for two steps, then the order placed from the measured op times; the single-process losses', async () => {
  const pp2 = await simulated(['schedule=auto-zb', 'parallel.pipeline=2', 'numMicroBatches=4', 'batchSize=8']);
  assertSameLosses(pp2.losses, reference);
  assert.match(pp2.output, /auto-zb: from step 3 on, the order placed from the measured op times \(F [\d.]+\/[\d.]+ I [\d.]+\/[\d.]+ W [\d.]+\/[\d.]+ ms\)/);
  for (const stage of [0, 1]) {
    assert.match(pp2.output, new RegExp(`stage ${stage}: measured bubble [\\d.]+, theoretical 0\\.077 \\(auto-zb, p=2, m=4, chunks=1\\); auto-zb order from step 3, simulated bubble [\\d.]+ with the measured op times`));
  }
  const hybrid = await simulated(['schedule=auto-zb', 'parallel.pipeline=2', 'parallel.tensor.size=2', 'parallel.data=2', 'numMicroBatches=2', 'batchSize=4']);
  assertSameLosses(hybrid.losses, reference);
  assert.match(hybrid.output, /auto-zb: from step 3 on/);
  assert.equal(hybrid.output.match(/auto-zb order from step 3/g)?.length, 8, hybrid.output);
});

let server: NatsServerHandle | undefined;
after(async () => {
  await server?.stop();
});

test('launch - zbv on pp2 as two worker processes over NATS: the single-process losses', async () => {
  server = await startNatsServer();
  const out = outDir('zbv-nats');
  const sets = ['schedule=zbv', 'numChunks=2', 'parallel.pipeline=2', 'numMicroBatches=4', 'batchSize=8'].flatMap((s) => ['--set', s]);
  const { code, output } = await runCli(['train', configFile, '--out', out, '--nats', server.url, ...sets]);
  assert.equal(code, 0, output);
  assert.equal((output.match(/rank \d+ registered \(node \d+, pid \d+/g) ?? []).length, 2);
  assertSameLosses(losses(join(out, 'metrics.jsonl'), read), reference);
});

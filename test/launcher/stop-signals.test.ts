/**
 * End to end: SIGTERM to a running job (what a cluster scheduler or a cloud sends before preempting a
 * machine) stops it at the next step boundary with a checkpoint of that step, exit code 143 and no
 * FAILED, in a single process and in a pp2 job's launcher (whose workers leave the signal to it); both
 * write trace.json; resuming to step 20 gives the uninterrupted run's step-20 loss bit for bit, and its
 * timeline goes on in the same trace.json.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { loadCheckpoint, resolveCheckpoint } from '../../src/checkpoint/index.ts';
import { startNatsServer, type NatsServerHandle } from '../../src/comm/nats-server.ts';
import { losses, runCli, startCli, writeTestConfig } from '../support/cli.ts';

const config = writeTestConfig({ steps: 20, batchSize: 4, seqLen: 16 });
const read = (path: string) => readFileSync(path, 'utf8');
let server: NatsServerHandle;

before(async () => {
  server = await startNatsServer();
});
after(async () => {
  await server.stop();
});

async function stopBySigterm(sets: string[], out: string, natsUrl: string): Promise<number> {
  const job = startCli(['train', config, '--out', out, ...sets.flatMap((s) => ['--set', s]), '--nats', natsUrl]);
  try {
    await job.waitFor(/step 3\/20/, 90_000);
    job.child.kill('SIGTERM');
    const exit = await job.exited;
    const output = job.output();
    assert.equal(exit.code, 143, output);
    assert.doesNotMatch(output, /FAILED/);
    const stopped = Number(output.match(/stopped by SIGTERM after step (\d+)/)?.[1]);
    assert.ok(stopped >= 3 && stopped < 20, output);
    assert.match(output, new RegExp(`checkpoint of step ${stopped}: .*step-${String(stopped).padStart(6, '0')}`));
    assert.equal(losses(join(out, 'metrics.jsonl'), read).length, stopped);
    const checkpoint = await loadCheckpoint(await resolveCheckpoint(out), { verify: true });
    try {
      assert.equal(checkpoint.manifest.dataLoader.nextStep, stopped);
    } finally {
      checkpoint.close();
    }
    return stopped;
  } finally {
    job.child.kill('SIGKILL');
  }
}

async function resumedAndWhole(sets: string[], out: string, natsUrl: string): Promise<void> {
  const flags = [...sets.flatMap((s) => ['--set', s]), '--nats', natsUrl, '--quiet'];
  const resumed = await runCli(['train', config, '--out', out, '--resume', out, ...flags]);
  assert.equal(resumed.code, 0, resumed.output);
  const whole = join(mkdtempSync(join(tmpdir(), 'gpt-hybrid-signal-')), 'whole');
  const uninterrupted = await runCli(['train', config, '--out', whole, ...flags]);
  assert.equal(uninterrupted.code, 0, uninterrupted.output);
  const resumedLosses = losses(join(out, 'metrics.jsonl'), read);
  assert.equal(resumedLosses.length, 20);
  assert.equal(resumedLosses[19], losses(join(whole, 'metrics.jsonl'), read)[19]);
  // The resumed launch's timeline goes on after the stopped one's: trace.json holds every step's events.
  const steps = new Set(traceEvents(out).map((e) => e.args?.step).filter((step) => step !== undefined));
  assert.deepEqual([...steps].sort((a, b) => a - b), Array.from({ length: 20 }, (_, i) => i + 1));
}

function traceEvents(out: string): { name: string; args?: { step?: number } }[] {
  return (JSON.parse(read(join(out, 'trace.json'))) as { traceEvents: { name: string; args?: { step?: number } }[] }).traceEvents;
}

test('SIGTERM - a single-process run stops after the step in flight with its checkpoint, trace.json and exit 143; resuming gives the uninterrupted step-20 loss', async () => {
  const out = join(mkdtempSync(join(tmpdir(), 'gpt-hybrid-signal-')), 'single');
  const stopped = await stopBySigterm([], out, 'nats://127.0.0.1:1');
  const events = traceEvents(out);
  const updates = events.filter((e) => e.name === 'optimizer step').map((e) => e.args?.step);
  assert.deepEqual(updates, Array.from({ length: stopped }, (_, i) => i + 1));
  assert.ok(events.some((e) => e.name === 'forward and backward'));
  await resumedAndWhole([], out, 'nats://127.0.0.1:1');
});

test('SIGTERM - a pp2 job\'s launcher stops the job at the next step boundary with a checkpoint, trace.json and exit 143; resuming gives the uninterrupted step-20 loss', async () => {
  const out = join(mkdtempSync(join(tmpdir(), 'gpt-hybrid-signal-')), 'pp2');
  const sets = ['parallel.pipeline=2', 'numMicroBatches=2'];
  await stopBySigterm(sets, out, server.url);
  assert.ok(traceEvents(out).length > 0);
  await resumedAndWhole(sets, out, server.url);
});

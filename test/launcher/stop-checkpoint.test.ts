/**
 * End to end: `ctl <run> stop --checkpoint` on a running data-parallel job saves a checkpoint at the step
 * where it stops (committed, verified, `latest`), and the job ends with exit 0.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadCheckpoint, resolveCheckpoint } from '../../src/checkpoint/index.ts';
import { startNatsServer } from '../../src/comm/nats-server.ts';
import { losses, runCli, startCli, writeTestConfig } from '../support/cli.ts';

test('ctl stop --checkpoint - the job saves its last step and ends with exit 0; latest names that checkpoint', async () => {
  const server = await startNatsServer();
  const out = join(mkdtempSync(join(tmpdir(), 'gpt-hybrid-stop-')), 'run');
  const job = startCli(['train', writeTestConfig(), '--out', out, '--set', 'steps=500', '--set', 'batchSize=2', '--set', 'parallel.data=2', '--nats', server.url]);
  try {
    await job.waitFor(/step 2\/500/, 90_000);
    const ctl = await runCli(['ctl', out, 'stop', '--checkpoint']);
    assert.equal(ctl.code, 0, ctl.output);
    assert.match(JSON.parse(ctl.output).message, /saving a checkpoint there/);
    const exit = await job.exited;
    assert.equal(exit.code, 0, job.output());
    const stopped = Number(job.output().match(/stopped after step (\d+)/)?.[1]);
    assert.ok(stopped >= 2 && stopped < 500, job.output());
    assert.match(job.output(), new RegExp(`checkpoint of step ${stopped}: .*step-${String(stopped).padStart(6, '0')}`));
    assert.equal(losses(join(out, 'metrics.jsonl'), (path) => readFileSync(path, 'utf8')).length, stopped);
    const checkpoint = await loadCheckpoint(await resolveCheckpoint(out), { verify: true });
    try {
      assert.equal(checkpoint.manifest.dataLoader.nextStep, stopped);
    } finally {
      checkpoint.close();
    }
  } finally {
    job.child.kill('SIGKILL');
    await server.stop();
  }
});

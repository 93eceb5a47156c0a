/**
 * End to end: recovery across nodes. Two launchers (nodes 0 and 1, one worker each) train data parallel
 * 2; node 1's worker is killed mid-run; node 0 orders node 1 to restart, every rank rolls back to the
 * last checkpoint, both launchers end with exit 0 and the losses equal an undisturbed run's.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { startNatsServer } from '../../src/comm/nats-server.ts';
import { losses, pidAlive, runCli, sharedJobKey, startCli, writeTestConfig, type RunningCli } from '../support/cli.ts';

test('recovery across nodes - a worker of node 1 killed mid-run: both nodes restart from the checkpoint and end with the same losses', async () => {
  const server = await startNatsServer();
  const folder = mkdtempSync(join(tmpdir(), 'gpt-hybrid-nodes-'));
  const read = (path: string) => readFileSync(path, 'utf8');
  const common = ['train', writeTestConfig(), '--set', 'steps=10', '--set', 'batchSize=2', '--set', 'parallel.data=2', '--set', 'checkpoint.every=2', '--nats', server.url];
  const nodes = ['--nnodes', '2', '--job-id', `nodes-${process.pid}`];
  const launchers: RunningCli[] = [];
  try {
    const undisturbed = await runCli([...common, '--out', join(folder, 'undisturbed'), '--quiet']);
    assert.equal(undisturbed.code, 0, undisturbed.output);
    const key = sharedJobKey();
    const [node0, node1] = [0, 1].map((node) => startCli([...common, ...nodes, '--node-rank', String(node), '--out', join(folder, `node${node}`)], key));
    launchers.push(node0, node1);
    await node0.waitFor(/checkpoint of step [2-8]: /, 90_000);
    const pid = Number(node0.output().match(/rank 1 registered \(node 1, pid (\d+)/)?.[1]);
    process.kill(pid, 'SIGKILL');
    const [exit0, exit1] = await Promise.all([node0.exited, node1.exited]);
    assert.equal(exit0.code, 0, node0.output());
    assert.equal(exit1.code, 0, node1.output());
    assert.match(node0.output(), new RegExp(`restart 1 of 3: rank 1 failed: died: killed by SIGKILL \\(pid ${pid}, node 1\\); rolling every rank back to the checkpoint of step (\\d+)`));
    const step = node0.output().match(/rolling every rank back to the checkpoint of step (\d+)/)![1];
    assert.match(node1.output(), new RegExp(`restart 1: node 0 rolls every rank back to the checkpoint of step ${step}\\n`));
    assert.match(node0.output(), /rank 1 registered \(node 1[^]*rank 1 registered \(node 1/, 'node 1 started a new worker');
    assert.deepEqual(losses(join(folder, 'node0', 'metrics.jsonl'), read), losses(join(folder, 'undisturbed', 'metrics.jsonl'), read));
    const workers = [...node0.output().matchAll(/rank \d+ registered \(node \d+, pid (\d+)/g)].map((m) => Number(m[1]));
    assert.equal(workers.length, 4, 'two workers per attempt');
    assert.ok(workers.every((worker) => !pidAlive(worker)), 'a worker outlived the job');
  } finally {
    for (const launcher of launchers) launcher.child.kill('SIGKILL');
    await server.stop();
  }
});

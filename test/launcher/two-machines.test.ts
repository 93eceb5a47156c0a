/**
 * Two nodes for real: two network namespaces joined by a veth pair stand for two machines, each with
 * its own address, its own NATS server (the two clustered over the veth) and one launcher with one
 * worker (`--nnodes 2`, `--data-plane-host` its own address). A pipeline of two stages across them
 * gives the one-node run's losses; its tensors cross the veth over the data plane, not through NATS;
 * losing one machine's NATS server mid-run is survived the way a dropped connection is on one node.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { losses, runCli, sharedJobKey, startCli, writeTestConfig, type RunningCli } from '../support/cli.ts';
import { machinePair, type Machine } from '../support/netns.ts';

const read = (path: string) => readFileSync(path, 'utf8');
const config = writeTestConfig();
const common = ['train', config, '--set', 'comm.dataPlane=tcp', '--set', 'steps=6', '--set', 'parallel.pipeline=2', '--set', 'numMicroBatches=2', '--set', 'checkpoint.every=2'];

/** Every launcher of the job holds its key. */
const JOB_KEY = sharedJobKey();

/**
 * Node `node` of a two-node job, launched inside `machine`. Both get the servers in one order: node k's
 * launcher and rank k then try server k first (nats-url.ts), each machine's processes their own server.
 */
function launchOn(machine: Machine, servers: string, node: number, jobId: string, out: string): RunningCli {
  const args = [...common, '--nnodes', '2', '--node-rank', String(node), '--job-id', jobId, '--nats', servers, '--data-plane-host', machine.address, '--out', out];
  return startCli(args, JOB_KEY, machine.spawnIn);
}

test('two machines - a pipeline across two network namespaces equals the one-node run, its tensors over the veth directly; losing one NATS server mid-run is survived', async () => {
  const folder = mkdtempSync(join(tmpdir(), 'gpt-hybrid-two-machines-'));
  const reference = await runCli([...common, '--out', join(folder, 'one-node'), '--quiet']);
  assert.equal(reference.code, 0, reference.output);
  const expected = losses(join(folder, 'one-node', 'metrics.jsonl'), read);
  assert.equal(expected.length, 6);

  const pair = await machinePair();
  const [a, b] = pair.machines;
  const launchers: RunningCli[] = [];
  try {
    const jobId = `two-machines-${process.pid}`;
    const servers = `${a.natsUrl},${b.natsUrl}`;
    const before = [a.natsCounters(), b.natsCounters()];
    const node0 = launchOn(a, servers, 0, jobId, join(folder, 'a'));
    const node1 = launchOn(b, servers, 1, jobId, join(folder, 'b'));
    launchers.push(node0, node1);
    const [exit0, exit1] = await Promise.all([node0.exited, node1.exited]);
    assert.equal(exit0.code, 0, node0.output());
    assert.equal(exit1.code, 0, node1.output());
    assert.deepEqual(losses(join(folder, 'a', 'metrics.jsonl'), read), expected);
    assert.match(node0.output(), new RegExp(`data plane: direct TCP links between ranks, listening on ${a.address.replaceAll('.', '\\.')}`));
    assert.match(node1.output(), new RegExp(`data plane: direct TCP links between ranks, listening on ${b.address.replaceAll('.', '\\.')}`));
    for (const [node, output] of [[0, node0.output()], [1, node1.output()]] as const) {
      assert.match(output, new RegExp(`\\[rank ${node}\\] data plane: [1-9]\\d* messages sent and [1-9]\\d* received over direct links`));
      assert.doesNotMatch(output, /cannot reach rank/);
    }
    // The tied embedding's gradient alone is 50304 x 64 float32 (12.9 MB) a step, 77 MB in 6 steps:
    // through NATS it would cross both servers; over the data plane they carry only control.
    const after = [a.natsCounters(), b.natsCounters()];
    const natsBytes = after.reduce((sum, counters, i) => sum + counters.inBytes - before[i]!.inBytes, 0);
    assert.ok(natsBytes < 10e6, `${(natsBytes / 1e6).toFixed(1)} MB went through the NATS servers`);

    // Machine b loses its NATS server after the checkpoint of step 2: its clients go over to a's.
    const out = join(folder, 'lost-server');
    const node0again = launchOn(a, servers, 0, `${jobId}-lost`, out);
    const node1again = launchOn(b, servers, 1, `${jobId}-lost`, join(folder, 'lost-server-b'));
    launchers.push(node0again, node1again);
    await node0again.waitFor(/checkpoint of step 2: /, 120_000);
    b.nats.kill('SIGKILL');
    const [again0, again1] = await Promise.all([node0again.exited, node1again.exited]);
    assert.equal(again0.code, 0, node0again.output());
    assert.equal(again1.code, 0, node1again.output());
    assert.match(node1again.output(), new RegExp(`NATS: connected to ${b.address.replaceAll('.', '\\.')}:4222`), 'node 1 did not use its own server');
    assert.match(node0again.output(), /restart 1 of 3: the NATS connection of [^\n]+ was interrupted/);
    assert.deepEqual(losses(join(out, 'metrics.jsonl'), read), expected);
  } finally {
    for (const launcher of launchers) launcher.child.kill('SIGKILL');
    pair.close();
  }
});

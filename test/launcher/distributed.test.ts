/**
 * End to end over real worker processes and a private NATS server: data-parallel parity with the
 * single-process reference (one node and two simulated nodes), control messages, and worker death.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { startNatsServer, type NatsServerHandle } from '../../src/comm/nats-server.ts';
import { readEvents } from '../../src/train/tensorboard-events.ts';
import { assertSameLosses, losses, pidAlive, runCli, sharedJobKey, startCli, writeTestConfig } from '../support/cli.ts';
import { assertTraceOfEveryRank } from '../support/trace.ts';

let server: NatsServerHandle;
let reference: number[];
let referenceValidation: number[];
const config = writeTestConfig();
/** Held-out text of its own (data.validPath): evaluating it changes nothing the training runs see. */
const validationFile = join(mkdtempSync(join(tmpdir(), 'gpt-hybrid-valid-')), 'valid.jsonl');
writeFileSync(validationFile, Array.from({ length: 8 }, (_, i) => JSON.stringify({ text: `Held-out sentence number ${i} is about ${['rivers', 'stars', 'bread', 'music'][i % 4]} and nothing else.` })).join('\n') + '\n');
const EVALUATE = ['--set', `data.validPath=${validationFile}`, '--set', 'eval.every=2'];
const validationLosses = (file: string) =>
  read(file).trim().split('\n').map((line) => JSON.parse(line) as { step: number; val_loss?: number }).filter((m) => m.val_loss !== undefined).map((m) => [m.step, m.val_loss!]);
const read = (path: string) => readFileSync(path, 'utf8');
const outDir = (name: string) => join(mkdtempSync(join(tmpdir(), 'gpt-hybrid-run-')), name);
/** Worker pids by rank, from the coordinator's registration lines. */
const registeredPids = (output: string) => {
  const pids: number[] = [];
  for (const match of output.matchAll(/rank (\d+) registered \(node \d+, pid (\d+)/g)) pids[Number(match[1])] = Number(match[2]);
  return pids;
};

before(async () => {
  server = await startNatsServer();
  const out = outDir('reference');
  const { code, output } = await runCli(['train', config, '--out', out, '--set', 'batchSize=4', ...EVALUATE, '--quiet']);
  assert.equal(code, 0, output);
  reference = losses(join(out, 'metrics.jsonl'), read);
  assert.equal(reference.length, 4);
  const validation = validationLosses(join(out, 'metrics.jsonl'));
  assert.deepEqual(validation.map(([step]) => step), [2, 4]);
  referenceValidation = validation.map(([, loss]) => loss!);
  assertTraceOfEveryRank(out, 1);
});

after(async () => {
  await server.stop();
});

test('launch - data parallel 2 over NATS equals the single-process run, and leaves no process', async () => {
  const out = outDir('dp2');
  const { code, output } = await runCli(['train', config, '--out', out, '--set', 'batchSize=2', '--set', 'parallel.data=2', '--nats', server.url]);
  assert.equal(code, 0, output);
  assertSameLosses(losses(join(out, 'metrics.jsonl'), read), reference);
  // The launcher writes TensorBoard's events (train/hooks/tensorboard.ts): a loss per metrics.jsonl line.
  assert.equal(readdirSync(join(out, 'tb')).flatMap((name) => readEvents(readFileSync(join(out, 'tb', name)))).flatMap((e) => e.scalars).filter((s) => s.tag === 'train/loss').length, read(join(out, 'metrics.jsonl')).trim().split('\n').length);
  const pids = registeredPids(output);
  assert.equal(pids.length, 2);
  assert.ok(pids.every((pid) => !pidAlive(pid)), 'a worker outlived the job');
  assertTraceOfEveryRank(out, 2);
  // Each worker's output, kept per rank with the time of each line.
  for (const rank of [0, 1]) {
    const lines = read(join(out, 'logs', `rank-${rank}.log`)).trim().split('\n');
    assert.match(lines[0]!, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z --- rank \d starts \(attempt 1\)$/);
    assert.ok(lines.every((line) => /^\d{4}-\d\d-\d\dT[\d:.]+Z /.test(line)), 'a line without its time');
    assert.ok(lines.some((line) => line.includes(`[rank ${rank}] `)), `rank ${rank}'s own lines are not in its log`);
    assert.ok(!lines.some((line) => line.includes(`[rank ${1 - rank}] `)), `rank ${1 - rank}'s lines in rank ${rank}'s log`);
  }
  const job = JSON.parse(read(join(out, 'job.json')));
  assert.match(job.jobId, /^config-[0-9a-f]{6}$/);
  assert.equal(job.nats, server.url);
});

test('launch - two nodes (two launchers, one worker each) train data parallel 2 with the same losses', async () => {
  const jobId = `twonode-${process.pid}`;
  const common = ['train', config, '--set', 'batchSize=2', '--set', 'parallel.data=2', '--nnodes', '2', '--nats', server.url, '--job-id', jobId];
  const out0 = outDir('node0');
  // Without the job's key on every node the launchers refuse to start, saying how to make one.
  const keyless = await runCli([...common, '--node-rank', '1', '--out', outDir('keyless')]);
  assert.equal(keyless.code, 1, keyless.output);
  assert.match(keyless.output, /a job on 2 nodes signs its messages with one key that every node's launcher must have: .*--job-key-file job\.key/);
  const key = sharedJobKey();
  const node0 = startCli([...common, '--node-rank', '0', '--out', out0], key);
  const node1 = startCli([...common, '--node-rank', '1', '--out', outDir('node1')], key);
  const [exit0, exit1] = await Promise.all([node0.exited, node1.exited]);
  assert.equal(exit0.code, 0, node0.output());
  assert.equal(exit1.code, 0, node1.output());
  assertSameLosses(losses(join(out0, 'metrics.jsonl'), read), reference);
  assert.match(node0.output(), /rank 1 registered \(node 1/);
});

test('ctl - status answers within 2 s, pause holds the step counter, resume continues, stop ends with exit 0', async () => {
  const out = outDir('ctl');
  const job = startCli(['train', config, '--out', out, '--set', 'steps=500', '--set', 'batchSize=2', '--set', 'parallel.data=2', '--nats', server.url]);
  try {
    await job.waitFor(/step 1\/500/, 60_000);
    const ctl = async (command: string, extra: string[] = []) => {
      const { code, output } = await runCli(['ctl', out, command, ...(command === 'status' ? ['--json'] : []), ...extra]);
      return { code, output, json: JSON.parse(output) };
    };
    // For people: the job line, then a row per rank with its node, pid and coordinates.
    const table = await runCli(['ctl', out, 'status']);
    assert.equal(table.code, 0, table.output);
    assert.match(table.output, /^job \S+  running  step \d+\/500  loss \d+\.\d{4}  \d+ tokens\/s  ETA .+  0 restarts  no checkpoint yet\n/);
    assert.match(table.output, /\nrank +node +pid +dp +pp +tp +state +step +step ms +memory +heartbeat\n/);
    for (const [rank, pid] of registeredPids(job.output()).entries()) {
      assert.match(table.output, new RegExp(`\\n${rank} +0 +${pid} +${rank} +0 +0 +(training|ready) +\\d+ +[1-9]\\d* +[1-9]\\d* MiB +\\d+\\.\\d s ago`), table.output);
    }
    // The answer within 2 s of asking (ctl gives up after --timeout); the CLI's own start, on a machine the
    // two workers keep busy, is not the job's to answer for.
    const status = await ctl('status', ['--timeout', '2000']);
    assert.equal(status.code, 0, status.output);
    assert.equal(status.json.state, 'running');
    assert.equal(status.json.ranks.length, 2);
    assert.equal(typeof status.json.lastLoss, 'number');

    assert.equal((await ctl('pause')).code, 0);
    await job.waitFor(/pause requested/, 5000);
    // The step in flight finishes; then the counter holds.
    let held = (await ctl('status')).json;
    for (let i = 0; i < 20 && held.state !== 'paused'; i++) {
      await new Promise((r) => setTimeout(r, 250));
      held = (await ctl('status')).json;
    }
    assert.equal(held.state, 'paused');
    await new Promise((r) => setTimeout(r, 2500));
    const still = (await ctl('status')).json;
    assert.equal(still.step, held.step, 'the step counter moved while paused');

    assert.equal((await ctl('resume')).code, 0);
    await job.waitFor(new RegExp(`step ${held.step + 1}/500`), 30_000);
    assert.equal((await ctl('checkpoint')).json.ok, true);

    assert.equal((await ctl('stop')).code, 0);
    const exit = await job.exited;
    assert.equal(exit.code, 0, job.output());
    assert.match(job.output(), /stopped after step \d+/);
    // Ended: the run folder says how, and ctl exits 0.
    const ended = await runCli(['ctl', out, 'status']);
    assert.equal(ended.code, 0, ended.output);
    assert.match(ended.output, /^job \S+  ended  exit 0  at \S+  stopped .*  last step \d+  loss \d+\.\d{4}  last checkpoint step-\d+/);
    assert.ok(registeredPids(job.output()).every((pid) => !pidAlive(pid)), 'a worker outlived the job');
  } finally {
    job.child.kill('SIGKILL');
  }
});

test('launch - SIGKILL of a worker ends the job non-zero within 10 s, naming the rank, with no process left', async () => {
  const out = outDir('kill');
  const job = startCli(['train', config, '--out', out, '--set', 'steps=500', '--set', 'batchSize=2', '--set', 'parallel.data=2', '--set', 'restart.max=0', '--nats', server.url]);
  try {
    await job.waitFor(/step 2\/500/, 60_000);
    const [rank0, rank1] = registeredPids(job.output());
    const killedAt = performance.now();
    process.kill(rank1, 'SIGKILL');
    const exit = await job.exited;
    const seconds = (performance.now() - killedAt) / 1000;
    assert.notEqual(exit.code, 0);
    assert.ok(seconds < 10, `the job took ${seconds.toFixed(1)} s to end`);
    assert.match(job.output(), new RegExp(`rank 1 \\(pid ${rank1}, node 0\\) died: killed by SIGKILL`));
    assert.ok(!pidAlive(rank0) && !pidAlive(rank1), 'a worker outlived the job');
  } finally {
    job.child.kill('SIGKILL');
  }
});

test('launch - a rank that never registers is named after the registration timeout', async () => {
  // Node 1 of a two-node job is never started: node 0 must say which rank is missing.
  const out = outDir('missing');
  const { code, output } = await runCli(
    ['train', config, '--out', out, '--set', 'batchSize=2', '--set', 'parallel.data=2', '--nnodes', '2', '--node-rank', '0', '--job-id', `missing-${process.pid}`, '--nats', server.url],
    // Node 0's own worker must register within it too, starting (tfjs, NATS) on a busy machine.
    { GPT_HYBRID_REGISTER_TIMEOUT_MS: '20000', ...sharedJobKey() },
  );
  assert.equal(code, 1, output);
  assert.match(output, /rank 1 did not register within 20 s/);
  assert.doesNotMatch(output, /rank 0 did not register/);
});

test('launch - a worker that stops answering (SIGSTOP) is named within 10 s and the job ends non-zero', async () => {
  const out = outDir('stopped');
  const job = startCli(['train', config, '--out', out, '--set', 'steps=500', '--set', 'batchSize=2', '--set', 'parallel.data=2', '--set', 'restart.max=0', '--nats', server.url]);
  let frozen: number | undefined;
  try {
    await job.waitFor(/step 2\/500/, 60_000);
    const [, rank1] = registeredPids(job.output());
    frozen = rank1;
    const stoppedAt = performance.now();
    process.kill(rank1, 'SIGSTOP');
    const exit = await job.exited;
    const seconds = (performance.now() - stoppedAt) / 1000;
    assert.notEqual(exit.code, 0);
    assert.ok(seconds < 10, `the job took ${seconds.toFixed(1)} s to end`);
    assert.match(job.output(), new RegExp(`rank 1 \\(pid ${rank1}, node 0\\) stopped answering`));
    // Killed when named, not after the grace the others get to exit (a frozen process would use it all).
    assert.match(job.output(), new RegExp(`killing rank 1 \\(pid ${rank1}\\): it stopped answering`));
    assert.ok(registeredPids(job.output()).every((pid) => !pidAlive(pid)), 'a worker outlived the job');
  } finally {
    if (frozen !== undefined && pidAlive(frozen)) process.kill(frozen, 'SIGKILL');
    job.child.kill('SIGKILL');
  }
});

test('pipeline - 2 stages under 1f1b (tensors over the data plane) and interleaved (through NATS) equal the single-process run; tied embeddings bit-identical', async () => {
  for (const [schedule, link] of [[['--set', 'schedule=1f1b'], 'tcp'], [['--set', 'schedule=interleaved', '--set', 'numChunks=2'], 'nats']] as const) {
    const out = outDir(`pp2-${schedule[1]}`);
    const { code, output } = await runCli(['train', config, '--out', out, '--set', 'parallel.pipeline=2', '--set', 'numMicroBatches=4', ...schedule, '--set', `comm.dataPlane=${link}`, '--nats', server.url]);
    assert.equal(code, 0, output);
    if (link === 'nats') {
      assert.match(output, /data plane: tensors travel through NATS \(comm.dataPlane "nats"\)/);
      assert.doesNotMatch(output, /over direct links/);
    } else {
      assert.equal([...output.matchAll(/\[rank \d\] data plane: [1-9]\d* messages sent and [1-9]\d* received over direct links/g)].length, 2, output);
    }
    assertSameLosses(losses(join(out, 'metrics.jsonl'), read), reference);
    assertTraceOfEveryRank(out, 2, { pipeline: true });
    const checksums = [...output.matchAll(/\[rank (\d)\] tied word embedding sha256 ([0-9a-f]{64})/g)].map((m) => [Number(m[1]), m[2]]);
    assert.equal(checksums.length, 2, output);
    assert.notEqual(checksums[0][0], checksums[1][0]);
    assert.equal(checksums[0][1], checksums[1][1], 'the first and last stage hold different word embeddings');
  }
});

test('tensor parallel - pipeline 2 x tensor 2 over 4 workers equals the single-process run, validation losses too; tied shards identical per tp rank', async () => {
  const out = outDir('pp2-tp2');
  const { code, output } = await runCli(['train', config, '--out', out, '--set', 'parallel.pipeline=2', '--set', 'parallel.tensor.size=2', '--set', 'numMicroBatches=4', ...EVALUATE, '--nats', server.url], {}, 240_000);
  assert.equal(code, 0, output);
  // Tensor parallelism reorders float32 sums; the issue allows 1e-4 relative.
  assertSameLosses(losses(join(out, 'metrics.jsonl'), read), reference);
  // The evaluations' forwards ran through the stage actors of 4 worker processes: the same samples, the same losses.
  const validation = validationLosses(join(out, 'metrics.jsonl'));
  assert.deepEqual(validation.map(([step]) => step), [2, 4]);
  validation.forEach(([, loss], i) => assert.ok(Math.abs(loss! - referenceValidation[i]!) <= 1e-5 * referenceValidation[i]!, `${loss} vs ${referenceValidation[i]}`));
  assert.match(output, /validation after step 4\/4 {2}val_loss/);
  const checksum = (rank: number) => output.match(new RegExp(`\\[rank ${rank}\\] tied word embedding sha256 ([0-9a-f]{64})`))?.[1];
  // World order tp-dp-pp: stage 0 is ranks 0 (tp 0) and 1 (tp 1), stage 1 is ranks 2 and 3.
  assert.ok(checksum(0) !== undefined && checksum(1) !== undefined, output);
  assert.equal(checksum(0), checksum(2));
  assert.equal(checksum(1), checksum(3));
  assert.notEqual(checksum(0), checksum(1));
  assertTraceOfEveryRank(out, 4, { pipeline: true });
});

test('checkpoint - a corrupt checkpoint is refused with the reason, and nothing runs', async () => {
  const out = outDir('corrupt');
  const first = await runCli(['train', config, '--out', out, '--set', 'steps=2', '--set', 'checkpoint.every=2', '--quiet']);
  assert.equal(first.code, 0, first.output);
  const rankFile = join(out, 'checkpoints', 'step-000002', 'rank-00000.safetensors');
  const bytes = readFileSync(rankFile);
  bytes[bytes.length - 7] ^= 0xff;
  writeFileSync(rankFile, bytes);
  const resumed = await runCli(['train', config, '--out', out, '--resume', out, '--steps', '4']);
  assert.notEqual(resumed.code, 0);
  assert.match(resumed.output, /checksum|sha256|SHA-256/i);
});

/**
 * Breaks every data plane connection of process `pid` (its TCP links other than those to the NATS server
 * on `natsPort`) with `ss -K`, as a failing network would; returns how many it broke.
 */
function breakDataPlaneLinks(pid: number, natsPort: number): number {
  const lines = execFileSync('ss', ['-tnpH', 'state', 'established'], { encoding: 'utf8' }).split('\n');
  let broken = 0;
  for (const line of lines) {
    if (!line.includes(`pid=${pid},`)) continue;
    const [local, peer] = line.trim().split(/\s+/).slice(2, 4) as [string, string];
    if (local.endsWith(`:${natsPort}`) || peer.endsWith(`:${natsPort}`)) continue;
    execFileSync('ss', ['-K', '-tn', 'state', 'established', 'src', local, 'dst', peer]);
    broken++;
  }
  return broken;
}

test('recovery - a data plane link broken mid-run is reported, the job rolls back to its last checkpoint and ends with the same losses', async () => {
  // Sixteen steps, so the job is still running when the broken link is reported (a rank waits 2 s first).
  const single = outDir('links-single');
  const reference = await runCli(['train', config, '--out', single, '--set', 'steps=16', '--quiet']);
  assert.equal(reference.code, 0, reference.output);
  const common = ['train', config, '--set', 'comm.dataPlane=tcp', '--set', 'steps=16', '--set', 'parallel.pipeline=2', '--set', 'numMicroBatches=2', '--set', 'checkpoint.every=2', '--nats', server.url];
  const out = outDir('links-broken');
  const job = startCli([...common, '--out', out]);
  try {
    await job.waitFor(/checkpoint of step 2: /, 90_000);
    assert.ok(breakDataPlaneLinks(registeredPids(job.output())[1], Number(new URL(server.url).port)) > 0, 'no data plane link to break');
    const exit = await job.exited;
    assert.equal(exit.code, 0, job.output());
    assert.match(job.output(), /restart 1 of 3: the data plane link between rank \d and rank \d broke \([^)]*\); tensors may be lost; rolling every rank back to the checkpoint of step ([2-9]|1[0-6])/);
    assert.match(job.output(), /\[rank 1\] data plane: [1-9]\d* messages sent and [1-9]\d* received over direct links/);
    assertSameLosses(losses(join(out, 'metrics.jsonl'), read), losses(join(single, 'metrics.jsonl'), read));
  } finally {
    job.child.kill('SIGKILL');
  }
});

test('recovery - a worker killed mid-run is restarted from the last checkpoint and the run ends with the same losses', async () => {
  const common = ['train', config, '--set', 'steps=10', '--set', 'batchSize=2', '--set', 'parallel.data=2', '--set', 'checkpoint.every=2', '--nats', server.url];
  const undisturbed = outDir('undisturbed');
  const clean = await runCli([...common, '--out', undisturbed, '--quiet']);
  assert.equal(clean.code, 0, clean.output);
  const out = outDir('recover');
  const job = startCli([...common, '--out', out]);
  try {
    await job.waitFor(/checkpoint of step 2: /, 90_000);
    process.kill(registeredPids(job.output())[1], 'SIGKILL');
    const exit = await job.exited;
    assert.equal(exit.code, 0, job.output());
    assert.match(job.output(), /restart 1 of 3: rank 1 \(pid \d+, node 0\) died: killed by SIGKILL; rolling every rank back to the checkpoint of step [2-8]/);
    assert.deepEqual(losses(join(out, 'metrics.jsonl'), read), losses(join(undisturbed, 'metrics.jsonl'), read));
  } finally {
    job.child.kill('SIGKILL');
  }
});

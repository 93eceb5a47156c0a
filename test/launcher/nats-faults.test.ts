/**
 * End to end over real worker processes and private nats-server processes: a NATS server killed and
 * restarted mid-run, and one server of a 3-server cluster killed mid-run. Neither may hang the job (a
 * lost message would otherwise wait for the 120 s collective timeout): it rolls back to the last
 * checkpoint and ends with exit 0 and the losses of an undisturbed run.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, test } from 'node:test';
import { freePort, startNatsCluster, startNatsServer, type NatsServerHandle } from '../../src/comm/nats-server.ts';
import { losses, startCli, writeTestConfig, type RunningCli } from '../support/cli.ts';

const config = writeTestConfig();
const read = (path: string) => readFileSync(path, 'utf8');
const outDir = (name: string) => join(mkdtempSync(join(tmpdir(), 'gpt-hybrid-faults-')), name);
// Pipeline 2: a lost activation or gradient is a receive that would wait for its timeout.
const job = ['train', config, '--set', 'steps=10', '--set', 'parallel.pipeline=2', '--set', 'numMicroBatches=2', '--set', 'checkpoint.every=2'];
/** From the kill to the end of the job; an undisturbed run takes about 15 s here, a hang 120 s more. */
const RECOVERY_LIMIT_S = 100;
let undisturbed: number[];

/** The job's exit, or a failure (and the job killed) when it runs past `limitMs`. */
async function ended(cli: RunningCli, limitMs: number): Promise<{ code: number | null; seconds: number }> {
  const started = performance.now();
  const timer = setTimeout(() => cli.child.kill('SIGKILL'), limitMs);
  const { code, signal } = await cli.exited;
  clearTimeout(timer);
  assert.equal(signal, null, `the job did not end within ${limitMs / 1000} s:\n${cli.output()}`);
  return { code, seconds: (performance.now() - started) / 1000 };
}

before(async () => {
  const server = await startNatsServer();
  try {
    const out = outDir('undisturbed');
    const cli = startCli([...job, '--out', out, '--nats', server.url]);
    assert.equal((await ended(cli, 120_000)).code, 0, cli.output());
    undisturbed = losses(join(out, 'metrics.jsonl'), read);
    assert.equal(undisturbed.length, 10);
  } finally {
    await server.stop();
  }
});

test('nats faults - the server killed and restarted mid-run: the job rolls back to its checkpoint and ends with the same losses', async () => {
  const port = await freePort();
  let server: NatsServerHandle = await startNatsServer({ port });
  const out = outDir('restart');
  const cli = startCli([...job, '--out', out, '--nats', server.url]);
  try {
    await cli.waitFor(/checkpoint of step 2: /, 90_000);
    await server.kill();
    const killedAt = performance.now();
    await new Promise((resolve) => setTimeout(resolve, 1000));
    server = await startNatsServer({ port });
    const { code } = await ended(cli, RECOVERY_LIMIT_S * 1000);
    const seconds = (performance.now() - killedAt) / 1000;
    assert.equal(code, 0, cli.output());
    assert.ok(seconds < RECOVERY_LIMIT_S, `the job took ${seconds.toFixed(1)} s after the kill`);
    assert.match(cli.output(), /restart 1 of 3: the NATS connection of .+ was interrupted \(127\.0\.0\.1:\d+: server restart\?\); messages may be lost; rolling every rank back to the checkpoint of step ([2-9]|10)\n/);
    assert.deepEqual(losses(join(out, 'metrics.jsonl'), read), undisturbed);
    console.log(`# server killed and restarted: the job ended ${seconds.toFixed(1)} s after the kill`);
  } finally {
    cli.child.kill('SIGKILL');
    await server.stop();
  }
});

test('nats faults - one server of a 3-server cluster killed mid-run: its ranks fail over and the job ends with the same losses', async () => {
  const cluster = await startNatsCluster(3);
  const out = outDir('cluster');
  const cli = startCli([...job, '--out', out, '--nats', cluster.map((server) => server.url).join(',')]);
  try {
    await cli.waitFor(/checkpoint of step 2: /, 90_000);
    // The list rotates by rank: rank r starts on server r (mod 3), so the two ranks sit on different servers.
    const serverOf = (rank: number) => cli.output().match(new RegExp(`\\[rank ${rank}\\] NATS: connected to 127\\.0\\.0\\.1:(\\d+)`))?.[1];
    assert.equal(serverOf(0), String(cluster[0].port), cli.output());
    assert.equal(serverOf(1), String(cluster[1].port), cli.output());
    await cluster[1].kill();
    const killedAt = performance.now();
    const { code } = await ended(cli, RECOVERY_LIMIT_S * 1000);
    const seconds = (performance.now() - killedAt) / 1000;
    assert.equal(code, 0, cli.output());
    // The launcher sits on server 0, which lives: rank 1 tells of its own interruption once failed over.
    assert.match(cli.output(), new RegExp(`\\[rank 1\\] nats: reconnected to 127\\.0\\.0\\.1:(${cluster[0].port}|${cluster[2].port})`));
    assert.match(cli.output(), new RegExp(`restart 1 of 3: the NATS connection of rank 1 was interrupted \\(127\\.0\\.0\\.1:${cluster[1].port}: server restart\\?\\)`));
    assert.deepEqual(losses(join(out, 'metrics.jsonl'), read), undisturbed);
    console.log(`# cluster member killed: the job ended ${seconds.toFixed(1)} s after the kill`);
  } finally {
    cli.child.kill('SIGKILL');
    await Promise.all(cluster.map((server) => server.stop()));
  }
});

test('nats faults - the server killed for good: once the clients give up reconnecting (30 s) the launcher ends with exit 1, the way to resume, and no process left', async () => {
  const server = await startNatsServer();
  const out = outDir('gone');
  const cli = startCli([...job, '--out', out, '--nats', server.url]);
  try {
    await cli.waitFor(/checkpoint of step 2: /, 90_000);
    const workers = [...cli.output().matchAll(/rank \d+ registered \(node \d+, pid (\d+)/g)].map((match) => Number(match[1]));
    await server.kill();
    // A flush or close asked during the client's last reconnect attempt never ended: Node ended the launcher with exit 13 (test/comm/nats-transport.test.ts pins it).
    const { code } = await ended(cli, 90_000);
    assert.equal(code, 1, cli.output());
    assert.match(cli.output(), new RegExp(`giving up: no NATS server of ${server.url} answered within 30 s; start it \\(or another of the cluster\\) and resume with --resume `));
    for (const pid of workers) {
      let alive = true;
      try {
        process.kill(pid, 0);
      } catch {
        alive = false;
      }
      assert.equal(alive, false, `worker ${pid} outlived its launcher`);
    }
  } finally {
    cli.child.kill('SIGKILL');
    await server.stop();
  }
});

/**
 * A launcher that started its own nats-server (nothing answered at the default address) and is then
 * killed with SIGKILL, which gives it no chance to clean up: within 10 s no process of its job may be
 * left, the server included. Run in a network namespace of its own, where nothing listens on the
 * default NATS port, so the launcher starts a private server as it would on a bare machine. Before the
 * kill: that server wants the login its launcher made (not on any command line); `ctl RUN` finds it, and
 * the job's key, in the run folder; a client without the login is refused by the server.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { startCli, writeTestConfig, type Spawner } from '../support/cli.ts';

const config = writeTestConfig({ steps: 200, parallel: { pipeline: 2 }, numMicroBatches: 2 });

function pidsIn(namespace: string): number[] {
  return execFileSync('ip', ['netns', 'pids', namespace], { encoding: 'utf8' })
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map(Number);
}

function commandOf(pid: number): string {
  try {
    return execFileSync('ps', ['-o', 'args=', '-p', String(pid)], { encoding: 'utf8' }).trim();
  } catch {
    return '(gone)';
  }
}

test('launcher - a private nats-server wants a login ctl finds in the run folder; SIGKILL of its launcher leaves no process of the job after 10 s', async () => {
  const namespace = `ghpriv${process.pid % 100000}`;
  execFileSync('ip', ['netns', 'add', namespace]);
  try {
    execFileSync('ip', ['netns', 'exec', namespace, 'ip', 'link', 'set', 'lo', 'up']);
    const out = join(mkdtempSync(join(tmpdir(), 'gpt-hybrid-private-')), 'run');
    const inNamespace: Spawner = (command, args, options) => spawn('ip', ['netns', 'exec', namespace, command, ...args], options);
    const cli = startCli(['train', config, '--out', out], { NATS_URL: '' }, inNamespace);
    const [, url] = await cli.waitFor(/private NATS server at (nats:\/\/127\.0\.0\.1:\d+)/, 30_000);
    await cli.waitFor(/step 1\/200/, 120_000);
    assert.match(cli.output(), /NATS nats:\/\/127\.0\.0\.1:\d+ \(a token made for its private server\)/);
    assert.equal(statSync(join(out, 'nats.token')).mode & 0o777, 0o600);
    const ctl = async (args: string[]) => {
      const run = startCli(['ctl', ...args], { NATS_URL: '', NATS_TOKEN: '' }, inNamespace);
      return { code: (await run.exited).code, output: run.output() };
    };
    const status = await ctl([out, 'status', '--json']);
    assert.equal(status.code, 0, status.output);
    assert.equal(JSON.parse(status.output).state, 'running');
    const jobId = JSON.parse(readFileSync(join(out, 'job.json'), 'utf8')).jobId as string;
    const stranger = await ctl([jobId, 'status', '--nats', url!, '--job-key-file', join(out, 'job.key')]);
    assert.equal(stranger.code, 1, stranger.output);
    assert.match(stranger.output, /The server refused our credentials/);
    const running = pidsIn(namespace);
    const commands = running.map(commandOf);
    assert.ok(commands.some((command) => command.startsWith('nats-server')), `no nats-server among the job's processes:\n${commands.join('\n')}`);
    const token = readFileSync(join(out, 'nats.token'), 'utf8').trim();
    assert.ok(!commands.some((command) => command.includes(token)), 'the login is on a command line');
    assert.ok(commands.filter((command) => command.includes('worker-main')).length === 2, `not two workers among the job's processes:\n${commands.join('\n')}`);
    cli.child.kill('SIGKILL');
    const killedAt = Date.now();
    let left = pidsIn(namespace);
    while (left.length > 0 && Date.now() - killedAt < 10_000) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      left = pidsIn(namespace);
    }
    assert.deepEqual(left.map((pid) => `${pid} ${commandOf(pid)}`), [], `still running 10 s after the launcher's SIGKILL`);
  } finally {
    for (const pid of pidsIn(namespace)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Gone already.
      }
    }
    execFileSync('ip', ['netns', 'del', namespace]);
  }
});

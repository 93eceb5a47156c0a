/**
 * A launcher that started its own nats-server (nothing answered at the default address) and is then
 * killed with SIGKILL, which gives it no chance to clean up: within 10 s no process of its job may be
 * left, the server included. Run in a network namespace of its own, where nothing listens on the
 * default NATS port, so the launcher starts a private server as it would on a bare machine.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { startCli, writeTestConfig } from '../support/cli.ts';

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

test('launcher - SIGKILL of a launcher with a private nats-server leaves no process of the job after 10 s', async () => {
  const namespace = `ghpriv${process.pid % 100000}`;
  execFileSync('ip', ['netns', 'add', namespace]);
  try {
    execFileSync('ip', ['netns', 'exec', namespace, 'ip', 'link', 'set', 'lo', 'up']);
    const out = join(mkdtempSync(join(tmpdir(), 'gpt-hybrid-private-')), 'run');
    const cli = startCli(['train', config, '--out', out], { NATS_URL: '' }, (command, args, options) => spawn('ip', ['netns', 'exec', namespace, command, ...args], options));
    await cli.waitFor(/private NATS server at nats:\/\/127\.0\.0\.1:\d+/, 30_000);
    await cli.waitFor(/step 1\/200/, 120_000);
    const running = pidsIn(namespace);
    const commands = running.map(commandOf);
    assert.ok(commands.some((command) => command.startsWith('nats-server')), `no nats-server among the job's processes:\n${commands.join('\n')}`);
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

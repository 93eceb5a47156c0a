/**
 * One running job a run folder: node 0's launcher (or the single process) holds `RUN/run.lock` while it
 * runs. A second start into the folder, with or without --overwrite or --resume, is refused naming the
 * job that holds it, and the running job's files stay; a lock left by a process that is gone (kill -9)
 * is taken over; one from another host is refused with how to clear it.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { lockRunFolder, RUN_LOCK_FILE, RunFolderInUseError } from '../../src/launcher/run-lock.ts';
import { runCli, startCli, writeTestConfig } from '../support/cli.ts';

const folder = () => {
  const dir = join(mkdtempSync(join(tmpdir(), 'gpt-hybrid-lock-')), 'run');
  mkdirSync(dir);
  return dir;
};

/** The pid of a process that has ended. */
function deadPid(): number {
  const child = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(child.stdout);
}

test('run lock - one holder at a time; a dead holder\'s lock is taken over, another host\'s or a live one\'s is not; release removes only its own', () => {
  const dir = folder();
  const lock = lockRunFolder(dir);
  assert.throws(() => lockRunFolder(dir), (error: unknown) => error instanceof RunFolderInUseError && new RegExp(`is in use by a running job \\(pid ${process.pid}, started `).test(error.message));
  lock.release();
  assert.equal(existsSync(join(dir, RUN_LOCK_FILE)), false);

  const path = join(dir, RUN_LOCK_FILE);
  writeFileSync(path, JSON.stringify({ pid: deadPid(), host: hostname(), startedAt: '2026-01-01T00:00:00.000Z' }));
  const takenOver = lockRunFolder(dir);
  assert.equal(JSON.parse(readFileSync(path, 'utf8')).pid, process.pid);
  takenOver.release();

  writeFileSync(path, 'garbage');
  lockRunFolder(dir).release();

  writeFileSync(path, JSON.stringify({ pid: process.pid, host: 'elsewhere', startedAt: '2026-01-01T00:00:00.000Z' }));
  assert.throws(() => lockRunFolder(dir), new RegExp(`in use by a job on elsewhere \\(pid ${process.pid}, .*if that job is gone, delete .*run\\.lock`));

  // Taken over by another start after ours was judged stale: not ours to remove.
  writeFileSync(path, JSON.stringify({ pid: deadPid(), host: hostname(), startedAt: 'x' }));
  const stale = lockRunFolder(dir);
  const other = { pid: 1, host: hostname(), startedAt: 'y' };
  writeFileSync(path, JSON.stringify(other));
  stale.release();
  assert.deepEqual(JSON.parse(readFileSync(path, 'utf8')), other);
});

test('run lock - a second start into a running job\'s folder is refused (exit 2), even with --overwrite or --resume, and the running job\'s files stay; after kill -9 the folder is free', async () => {
  // A checkpoint every step, so that --resume gets as far as the lock.
  const config = writeTestConfig({ steps: 400, checkpoint: { every: 1, keep: 2 } });
  const out = join(mkdtempSync(join(tmpdir(), 'gpt-hybrid-lock-')), 'run');
  const running = startCli(['train', config, '--out', out]);
  try {
    await running.waitFor(/step 2\/400/, 90_000);
    const pid = running.child.pid!;
    for (const extra of [[], ['--overwrite'], ['--resume', out]]) {
      const second = await runCli(['train', config, '--out', out, '--steps', '2', ...extra]);
      assert.equal(second.code, 2, second.output);
      assert.match(second.output, new RegExp(`is in use by a running job \\(pid ${pid}, started .*\\): stop it \\(gpt-hybrid ctl .* stop, or Ctrl-C\\) or give another --out`), extra.join(' '));
    }
    assert.ok(existsSync(join(out, 'config.json')), '--overwrite removed the running job\'s files');
    const linesBefore = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').length;
    await running.waitFor(new RegExp(`step ${linesBefore + 2}/400`), 90_000);
    running.child.kill('SIGKILL');
    await running.exited;
    const after = await runCli(['train', config, '--out', out, '--steps', '1', '--overwrite', '--quiet']);
    assert.equal(after.code, 0, after.output);
    assert.equal(readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').length, 1);
    assert.equal(existsSync(join(out, RUN_LOCK_FILE)), false, 'the lock outlived its run');
  } finally {
    running.child.kill('SIGKILL');
  }
});

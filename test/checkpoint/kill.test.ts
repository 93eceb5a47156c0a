// Tests: a process SIGKILLed while committing checkpoints leaves the last committed one loadable (real process, real files).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { listCheckpoints, loadCheckpoint, resolveCheckpoint } from '../../src/checkpoint/checkpoint.ts';
import { withTempDir, writeSyntheticCheckpoint } from './helpers.ts';

const FIXTURE = fileURLToPath(new URL('./fixtures/commit-loop.ts', import.meta.url));

/** Runs the commit loop and SIGKILLs it `delayMs` after it begins writing step `killDuring`; returns the steps it reported committed. */
function runAndKill(root: string, killDuring: number, delayMs: number): Promise<number[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', FIXTURE, root, String(killDuring)], { stdio: ['ignore', 'pipe', 'pipe'] });
    const committed: number[] = [];
    let stderr = '';
    let buffered = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.stdout.on('data', (chunk: Buffer) => {
      buffered += chunk.toString();
      const lines = buffered.split('\n');
      buffered = lines.pop()!;
      for (const line of lines) {
        const [event, step] = line.split(' ');
        if (event === 'committed') committed.push(Number(step));
        if (event === 'begin' && Number(step) === killDuring) setTimeout(() => child.kill('SIGKILL'), delayMs);
      }
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (signal !== 'SIGKILL') reject(new Error(`commit loop exited with ${code}/${signal} before being killed: ${stderr}`));
      else resolve(committed);
    });
  });
}

test('kill - SIGKILL at several points of a commit leaves latest naming a complete, verified checkpoint', async () => {
  for (const [killDuring, delayMs] of [[2, 0], [3, 4], [3, 15]] as const) {
    await withTempDir(async (root) => {
      const committed = await runAndKill(root, killDuring, delayMs);
      assert.ok(committed.includes(killDuring - 1), `step ${killDuring - 1} was never reported committed: ${committed}`);
      const latest = await loadCheckpoint(await resolveCheckpoint(root), { verify: true });
      // The kill may land after the commit finished but before "committed" was printed.
      assert.ok([killDuring - 1, killDuring].includes(latest.manifest.step), `latest is step ${latest.manifest.step} (killed during ${killDuring})`);
      const w = await latest.openRank(3);
      assert.deepEqual([...w.float32('w')], [latest.manifest.step, 3]);
      // Every visible step directory is complete.
      for (const { dir } of await listCheckpoints(root)) await loadCheckpoint(dir, { verify: true });
      await writeSyntheticCheckpoint(root, 10, { data: 1, pipeline: 1, tensor: 1 });
      assert.deepEqual((await readdir(root)).filter((entry) => entry.startsWith('.')), [], 'leftovers removed by the next commit');
    });
  }
});

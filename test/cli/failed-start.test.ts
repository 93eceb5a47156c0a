/**
 * A run that fails before its first step (here: a malformed line in the data, found while tokenizing)
 * leaves no run folder behind, unless the folder was there before it started.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { runCli, writeTestConfig } from '../support/cli.ts';

test('train - a failed start removes the run folder it made, and keeps one that existed', async () => {
  const root = mkdtempSync(join(tmpdir(), 'gpt-hybrid-failed-start-'));
  const data = join(root, 'bad.jsonl');
  writeFileSync(data, '{"text": "fine"}\n{"text": \n');
  const config = writeTestConfig({ data: { path: data } });
  const fresh = join(root, 'fresh');
  const run = await runCli(['train', config, '--out', fresh], { NATS_URL: 'nats://127.0.0.1:1' });
  assert.equal(run.code, 1, run.output);
  assert.match(run.output, /bad\.jsonl:2: not valid JSON/);
  assert.match(run.output, /removed the run folder .*fresh: the run ended before its first step/);
  assert.equal(existsSync(fresh), false, run.output);
  const existing = join(root, 'existing');
  mkdirSync(existing);
  assert.equal((await runCli(['train', config, '--out', existing], { NATS_URL: 'nats://127.0.0.1:1' })).code, 1);
  assert.ok(existsSync(existing));
  assert.ok(readdirSync(existing).length > 0, 'the run wrote its config before failing; the folder is the user\'s to keep');
});

test('ctl - a job id NATS cannot carry (a dot) is refused with the reason, and ctl exits at once', async () => {
  const started = Date.now();
  // Killed after 15 s: before the fix the process printed the error and then never exited.
  const run = await runCli(['ctl', 'a.b', 'status'], {}, 15_000);
  assert.equal(run.code, 1, run.output);
  assert.match(run.output, /job id "a\.b" is not usable in a NATS subject/);
  assert.ok(Date.now() - started < 10_000, `ctl took ${Date.now() - started} ms to exit`);
});

test('a file where a folder belongs (train --out, --resume, generate, ctl) is refused naming it, and left as it was', async () => {
  const root = mkdtempSync(join(tmpdir(), 'gpt-hybrid-file-not-folder-'));
  const file = join(root, 'notes.txt');
  writeFileSync(file, 'mine\n');
  const config = writeTestConfig({});
  const cases: Array<{ args: string[]; code: number; message: RegExp }> = [
    { args: ['train', config, '--out', file], code: 2, message: /--out .*notes\.txt is a file, not a folder: give a folder for the run/ },
    { args: ['train', config, '--out', join(root, 'run'), '--resume', file], code: 1, message: /notes\.txt: is a file, not a folder; pass a checkpoint \(step-NNNNNN\) directory or a run's --out directory/ },
    { args: ['generate', file, '--prompt', 'hi'], code: 1, message: /notes\.txt: is a file, not a folder; pass a checkpoint/ },
    { args: ['ctl', file, 'status'], code: 1, message: /notes\.txt is a file: give a run folder \(the job's --out\) or the job id/ },
  ];
  for (const { args, code, message } of cases) {
    const run = await runCli(args, { NATS_URL: 'nats://127.0.0.1:1' }, 30_000);
    assert.equal(run.code, code, `${args.join(' ')}: ${run.output}`);
    assert.match(run.output, message, args.join(' '));
    assert.doesNotMatch(run.output, /EEXIST|ENOTDIR/, args.join(' '));
  }
  assert.equal(readFileSync(file, 'utf8'), 'mine\n');
  assert.deepEqual(readdirSync(root), ['notes.txt']);
});

/**
 * A run that fails before its first step (here: a malformed line in the data, found while tokenizing)
 * leaves no run folder behind, unless the folder was there before it started; a resume of another model
 * is refused naming the difference, and leaves the run it would have continued as it was.
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
  assert.ok(readdirSync(existing).length > 0, 'the run wrote its files before failing; the folder is the user\'s to keep');
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

test('train --resume with another model (one process, or a launched job) is refused naming the parameters, and the run folder stays as it was', async () => {
  const config = writeTestConfig({ steps: 2, checkpoint: { every: 1, keep: 2 } });
  const out = join(mkdtempSync(join(tmpdir(), 'gpt-hybrid-resume-model-')), 'run');
  const first = await runCli(['train', config, '--out', out, '--quiet']);
  assert.equal(first.code, 0, first.output);
  const before = Object.fromEntries(['config.json', 'metrics.jsonl'].map((name) => [name, readFileSync(join(out, name), 'utf8')]));
  const cases: Array<{ sets: string[]; message: RegExp }> = [
    // The tiny model has 4 layers: a shallower one would have loaded the first two and dropped the rest.
    { sets: ['model.numLayers=2'], message: /holds blocks\.2\.ln1\.gamma, .* and \d+ more, which the model lacks/ },
    { sets: ['model.numLayers=6', 'parallel.pipeline=2', 'numMicroBatches=2'], message: /lacks blocks\.4\.ln1\.gamma, .* and \d+ more/ },
  ];
  for (const { sets, message } of cases) {
    const launched = sets.some((set) => set.startsWith('parallel.'));
    const run = await runCli(['train', config, '--resume', out, '--steps', '4', '--quiet', ...sets.flatMap((set) => ['--set', set]), ...(launched ? ['--simulate'] : [])]);
    assert.equal(run.code, 1, run.output);
    assert.match(run.output, /the checkpoint is of another model than the config's/);
    assert.match(run.output, message);
    assert.match(run.output, /resume with the model settings it was trained with/);
    for (const [name, text] of Object.entries(before)) assert.equal(readFileSync(join(out, name), 'utf8'), text, `${name} changed by the refused resume (${sets.join(' ')})`);
  }
});

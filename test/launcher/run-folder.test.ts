/**
 * One run, one folder (issue 18, item 2): a new run is refused an --out folder that holds another run
 * unless --resume or --overwrite says what to do, --overwrite leaves only the new run's files, and a
 * restart only ever rolls back to a checkpoint of its own run: another run's checkpoint found in the
 * folder (two runs started into it at once, a copied-in checkpoint) is passed over.
 */
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadConfig } from '../../src/config/load.ts';
import { launch } from '../../src/launcher/launch.ts';
import { earlierRunIn, removeEarlierRun } from '../../src/launcher/run-folder.ts';
import type { RankProcess } from '../../src/launcher/simulated-rank.ts';
import { readManifest } from '../../src/checkpoint/index.ts';
import { assertSameLosses, losses, runCli, singleProcessLosses, writeTestConfig } from '../support/cli.ts';

const folder = (name: string) => join(mkdtempSync(join(tmpdir(), 'gpt-hybrid-folder-')), name);
const read = (path: string) => readFileSync(path, 'utf8');

test('run folder - what counts as an earlier run, and --overwrite removes only what a run writes', () => {
  const dir = folder('f');
  mkdirSync(dir);
  assert.equal(earlierRunIn(dir), undefined);
  writeFileSync(join(dir, 'metrics.jsonl'), '');
  writeFileSync(join(dir, 'config.json'), '{}');
  assert.equal(earlierRunIn(dir), undefined, 'a start that ran no step is no run');
  writeFileSync(join(dir, 'metrics.jsonl'), '{"step":1}\n{"step":2}\n');
  mkdirSync(join(dir, 'checkpoints', 'step-000002'), { recursive: true });
  mkdirSync(join(dir, 'logs'));
  writeFileSync(join(dir, 'trace.rank3.jsonl'), '');
  // A lock's own copy, left by a start killed while it took the lock (run-lock.ts).
  writeFileSync(join(dir, 'run.lock.4242'), '{}');
  writeFileSync(join(dir, 'notes.txt'), 'mine');
  assert.deepEqual(earlierRunIn(dir), { holds: '2 lines in metrics.jsonl, 1 checkpoint', resumable: true });
  removeEarlierRun(dir);
  assert.equal(earlierRunIn(dir), undefined);
  for (const name of ['metrics.jsonl', 'config.json', 'checkpoints', 'logs', 'trace.rank3.jsonl', 'run.lock.4242']) assert.equal(existsSync(join(dir, name)), false, name);
  assert.equal(read(join(dir, 'notes.txt')), 'mine');
});

test('run folder - a second run into a used --out is refused (exit 2, nothing lost); --overwrite trains a clean new run', async () => {
  const config = writeTestConfig({ steps: 2, checkpoint: { every: 2, keep: 2 } });
  const out = folder('used');
  const first = await runCli(['train', config, '--out', out, '--quiet']);
  assert.equal(first.code, 0, first.output);
  const before = read(join(out, 'metrics.jsonl'));

  const refused = await runCli(['train', config, '--out', out, '--set', 'seed=7', '--quiet']);
  assert.equal(refused.code, 2, refused.output);
  assert.match(refused.output, /already holds a run \(2 lines in metrics\.jsonl, 1 checkpoint\): continue it with --resume .*, replace it with --overwrite, or give another --out/);
  assert.equal(read(join(out, 'metrics.jsonl')), before);
  assert.ok(existsSync(join(out, 'checkpoints', 'step-000002')));

  const both = await runCli(['train', config, '--out', out, '--overwrite', '--resume', out]);
  assert.equal(both.code, 2, both.output);
  assert.match(both.output, /--overwrite starts a new run and --resume continues one/);

  const overwritten = await runCli(['train', config, '--out', out, '--set', 'seed=7', '--overwrite', '--quiet']);
  assert.equal(overwritten.code, 0, overwritten.output);
  assertSameLosses(losses(join(out, 'metrics.jsonl'), read), await singleProcessLosses(config, ['seed=7']), 0);
  const manifest = await readManifest(join(out, 'checkpoints', 'step-000002'));
  assert.equal(manifest.seed, 7, 'the checkpoint is the new run\'s');
  assert.match(String(manifest.extra.runId), /^run-\d{8}-[0-9a-f]{8}$/);
});

test('run folder - a restart passes over another run\'s checkpoint in its folder and rolls back to its own start', async () => {
  const configFile = writeTestConfig();
  const layout = ['parallel.pipeline=2', 'numMicroBatches=4', 'batchSize=8'];
  const reference = await singleProcessLosses(configFile, ['batchSize=8']);
  // Another run (another seed) whose step-4 checkpoint ends up in this run's folder.
  const other = folder('other');
  const made = await runCli(['train', configFile, '--out', other, '--simulate', ...[...layout, 'seed=9', 'checkpoint.every=4'].flatMap((s) => ['--set', s]), '--quiet']);
  assert.equal(made.code, 0, made.output);
  const out = folder('this');
  mkdirSync(out);
  cpSync(join(other, 'checkpoints'), join(out, 'checkpoints'), { recursive: true });

  const config = loadConfig(configFile, [...layout, 'restart.max=2']);
  let rank1: RankProcess | undefined;
  const byStep = new Map<number, number>();
  const lines: string[] = [];
  const code = await launch({
    config,
    configPath: configFile,
    outDir: out,
    nnodes: 1,
    nodeRank: 0,
    hooks: [
      {
        name: 'collect',
        afterStep: (_state, result) => {
          byStep.set(result.step, result.loss);
          if (result.step === 2 && !lines.some((line) => line.startsWith('restart'))) rank1?.kill('SIGKILL');
        },
      },
    ],
    log: (line) => lines.push(line),
    simulate: { actionTimeoutMs: 2_000, receiveTimeoutMs: 4_000, onRank: (rank, handle) => rank === 1 && (rank1 = handle) },
  });
  assert.equal(code, 0, lines.join('\n'));
  assert.ok(lines.some((line) => /passing over .*step-000004: a checkpoint of another run \(run-\d{8}-[0-9a-f]{8}\)/.test(line)), lines.join('\n'));
  assert.ok(lines.some((line) => /^restart 1 of 2: .*rolling every rank back to the start/.test(line)), lines.join('\n'));
  assertSameLosses([...byStep.keys()].sort((a, b) => a - b).map((step) => byStep.get(step)!), reference);
});

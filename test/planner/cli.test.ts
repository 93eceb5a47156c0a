// Tests: `gpt-hybrid plan` (src/cli/plan.ts, its command line in src/cli/plan-args.ts) and the human report (src/planner/format.ts).
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { commandHelp, parseCommandLine } from '../../src/cli/args.ts';
import { UsageError } from '../../src/cli/command-spec.ts';
import type { PlanCommand } from '../../src/cli/plan-args.ts';
import { planJson, resolvePlanConfig } from '../../src/cli/plan.ts';
import { ConfigError } from '../../src/config/errors.ts';
import { resolveModelConfig } from '../../src/model/config.ts';
import { formatIntegerSet, formatPlan, groupAlikeRanks, memoryWarnings } from '../../src/planner/format.ts';
import { planTraining } from '../../src/planner/plan.ts';
import { runCli } from '../support/cli.ts';

function plan(argv: string[]): PlanCommand {
  const result = parseCommandLine(['plan', ...argv]);
  assert.equal(result.command, 'plan');
  return result as PlanCommand;
}

function writeConfig(content: object): string {
  const file = join(mkdtempSync(join(tmpdir(), 'gpt-hybrid-plan-')), 'config.json');
  writeFileSync(file, JSON.stringify(content));
  return file;
}

test('plan cli - parsing: a config file, a preset, overrides, json; and what is refused', () => {
  assert.deepEqual(plan(['--model', 'gpt3', '--set', 'parallel.pipeline=8', '--json']), {
    command: 'plan',
    model: 'gpt3',
    sets: ['parallel.pipeline=8'],
    json: true,
    nnodes: 1,
  });
  assert.deepEqual(plan(['c.json', '--nproc-per-node', '4']), { command: 'plan', configPath: 'c.json', sets: [], json: false, nnodes: 1, nprocPerNode: 4 });
  const refused: Array<[string[], RegExp]> = [
    [[], /plan needs a config file or --model PRESET/],
    [['--model', 'gpt2'], /unknown model preset "gpt2"; did you mean "gpt3"\?/],
    [['--model', 'huge-thing-9'], /unknown model preset "huge-thing-9"; choose one of tiny, gpt2-small, gpt2-exlarge, gpt3/],
    [['a.json', 'b.json'], /unexpected argument "b.json"; plan takes at most one config file/],
    [['--model', 'gpt3', '--set', 'pipeline'], /"pipeline" has no "="/],
    [['--model', 'gpt3', '--jsn'], /unknown option --jsn for plan; did you mean --json\?/],
  ];
  for (const [argv, pattern] of refused) {
    assert.throws(() => parseCommandLine(['plan', ...argv]), (error: unknown) => error instanceof UsageError && pattern.test(error.message) && /usage: gpt-hybrid plan /.test(error.message), argv.join(' '));
  }
  assert.match(commandHelp('plan'), /--model PRESET +model preset: tiny \| gpt2-small \| gpt2-exlarge \| gpt3/);
});

test('plan cli - a preset alone gets the micro-batches a pipeline needs, and says so', () => {
  const pp8 = resolvePlanConfig(plan(['--model', 'gpt3', '--set', 'parallel.pipeline=8', '--set', 'parallel.tensor.size=8']));
  assert.equal(pp8.config.model.hiddenSize, 12288);
  assert.deepEqual([pp8.config.numMicroBatches, pp8.config.batchSize], [8, 8]);
  assert.equal(pp8.notes.length, 1);
  assert.match(pp8.notes[0]!, /numMicroBatches = 8 \(chosen for pipeline 8/);

  const cases: Array<[string[], number, number, number]> = [
    // sets, numMicroBatches, batchSize, notes
    [[], 1, 8, 0],
    [['parallel.pipeline=3'], 3, 9, 2],
    [['parallel.pipeline=4', 'batchSize=10'], 5, 10, 1],
    [['parallel.pipeline=4', 'numMicroBatches=6'], 6, 12, 1],
    [['parallel.pipeline=2', 'numChunks=2', 'batchSize=12'], 2, 12, 1],
    [['parallel.pipeline=4', 'numMicroBatches=4', 'batchSize=4'], 4, 4, 0],
  ];
  for (const [sets, micro, batch, notes] of cases) {
    const resolved = resolvePlanConfig(plan(['--model', 'tiny', ...sets.flatMap((s) => ['--set', s])]));
    assert.deepEqual([resolved.config.numMicroBatches, resolved.config.batchSize, resolved.notes.length], [micro, batch, notes], sets.join(' '));
  }
  // A user's impossible choice is still checked by the config rules.
  assert.throws(() => resolvePlanConfig(plan(['--model', 'gpt3', '--set', 'parallel.tensor.size=5'])), (e: unknown) => e instanceof ConfigError && /numAttentionHeads = 96 \(from preset "gpt3"\) is not divisible by parallel.tensor.size = 5/.test(e.message));
  assert.throws(() => resolvePlanConfig(plan(['--model', 'tiny', '--set', 'parallel.data="auto"'])), /"auto" needs the world size/);
  const auto = resolvePlanConfig(plan(['--model', 'tiny', '--set', 'parallel.data="auto"', '--set', 'parallel.pipeline=2', '--nproc-per-node', '6']));
  assert.equal(auto.config.parallel.data, 3);
});

test('plan cli - a config file, with --model and --set on top; its data file is not needed', () => {
  const file = writeConfig({ model: { preset: 'tiny', numLayers: 6 }, parallel: { pipeline: 2 }, numMicroBatches: 2, batchSize: 4, data: { path: 'missing.jsonl' } });
  const { config, notes } = resolvePlanConfig(plan([file, '--set', 'parallel.tensor.size=2']));
  assert.deepEqual([config.model.numLayers, config.model.hiddenSize, config.parallel.tensor.size, notes.length], [6, 64, 2, 0]);
  const withPreset = resolvePlanConfig(plan([file, '--model', 'gpt2-small']));
  // The preset replaces the file's; the file's explicit numLayers still wins over it.
  assert.deepEqual([withPreset.config.model.hiddenSize, withPreset.config.model.numLayers], [768, 6]);
  assert.throws(() => resolvePlanConfig(plan([file, '--set', 'numMicroBatches=1'])), /numMicroBatches = 1 is fewer than parallel.pipeline = 2 stages/);
});

test('plan cli - the JSON document and the human table', () => {
  const model = resolveModelConfig({ preset: 'gpt3' });
  const trained = planTraining({ model, parallel: { data: 2, pipeline: 8, tensor: { size: 8 } }, numMicroBatches: 8, numChunks: 1, batchSize: 8, seqLen: 2048 });
  const json = JSON.parse(JSON.stringify(planJson(trained, ['a note']))) as {
    totalParams: number;
    notes: string[];
    ranks: Array<{ rank: number; dp: number; pp: number; tp: number; layers: number[][]; params: number; bytes: Record<string, number> }>;
  };
  assert.equal(json.ranks.length, 128);
  assert.deepEqual(json.notes, ['a note']);
  assert.deepEqual(Object.keys(json.ranks[0]!.bytes), ['params', 'grads', 'optimizer', 'activations']);
  assert.deepEqual(json.ranks[127]!.layers, [[84, 96]]);
  assert.equal(json.totalParams, 174_604_812_288);

  // 128 ranks in 8 rows: the ranks of one stage differ only in dp and tp.
  assert.equal(groupAlikeRanks(trained.ranks).length, 8);
  const text = formatPlan(trained, model, ['a note']);
  assert.match(text, /^Layout: world 128 = data 2 x pipeline 8 x tensor 8 \(order tp-dp-pp\)$/m);
  assert.match(text, /^Parameters: 174\.60 B by Megatron's formula/m);
  assert.match(text, /^Note: a note$/m);
  assert.match(text, /^ranks +dp +pp +tp +layers +params +weights +grads +adam +activations +in flight +total\/rank$/m);
  assert.match(text, /^0-15 +0-1 +0 +0-7 +\[0,12\) +2\.82 B +10\.5 GiB +10\.5 GiB +21\.0 GiB +67\.5 GiB +8 +110 GiB$/m);
  assert.match(text, /^112-127 +0-1 +7 +0-7 +\[84,96\) +2\.80 B\* /m);
  assert.match(text, /^One replica \(64 ranks\) holds 175,448,850,432 parameters = the table's 174,604,836,864 \+ 618,135,552 in tied-embedding copies/m);
  // Every stage is over the wasm heap; the first four also over an 80 GiB GPU.
  const warnings = memoryWarnings(trained);
  assert.equal(warnings.length, 8);
  assert.match(warnings[0]!, /^ranks 0-15 need 110 GiB each: more than the 4 GiB wasm heap and more than an 80 GiB GPU holds/);
  assert.match(warnings[7]!, /^ranks 112-127 need 50\.4 GiB each: more than the 4 GiB wasm heap \(an 80 GiB GPU would hold it\)/);

  const tiny = resolveModelConfig({ preset: 'tiny' });
  const small = planTraining({ model: tiny, parallel: { data: 1, pipeline: 1, tensor: { size: 1 } }, numMicroBatches: 1, numChunks: 1, batchSize: 8, seqLen: 128 });
  assert.deepEqual(memoryWarnings(small), []);
  assert.doesNotMatch(formatPlan(small, tiny), /Warning|tied-embedding copies/);
  assert.equal(formatIntegerSet([9, 0, 1, 2, 3, 8, 5]), '0-3,5,8-9');
});

test('plan cli - end to end: gpt3 at pipeline 8 x tensor 8 as JSON, the table, and errors with exit code 2', async () => {
  const { code, output } = await runCli(['plan', '--model', 'gpt3', '--set', 'parallel.pipeline=8', '--set', 'parallel.tensor.size=8', '--json']);
  assert.equal(code, 0, output);
  const json = JSON.parse(output) as { totalParams: number; ranks: Array<{ params: number; tiedCopyParams: number }> };
  assert.equal(json.ranks.length, 64);
  assert.ok(Math.abs(json.totalParams - 175e9) / 175e9 < 0.01);
  const copies = json.ranks.reduce((n, r) => n + r.tiedCopyParams, 0);
  assert.equal(copies, 50304 * 12288);
  const sum = json.ranks.reduce((n, r) => n + r.params, 0);
  assert.ok(Math.abs(sum - copies - json.totalParams) / json.totalParams < 0.002);

  const table = await runCli(['plan', '--model', 'tiny']);
  assert.equal(table.code, 0, table.output);
  assert.match(table.output, /^0 +0 +0 +0 +\[0,4\) +3\.44 M /m);

  const bad = await runCli(['plan', '--model', 'gpt3', '--set', 'parallel.tensor.size=5']);
  assert.equal(bad.code, 2);
  assert.match(bad.output, /model\.numAttentionHeads: model\.numAttentionHeads = 96 \(from preset "gpt3"\) is not divisible by parallel\.tensor\.size = 5/);
  const missing = await runCli(['plan', 'no-such-config.json']);
  assert.equal(missing.code, 2);
  assert.match(missing.output, /no-such-config\.json.*\n.*cannot read the config file: no such file/);
});

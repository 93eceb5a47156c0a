// Tests: command-line parsing and help (src/cli/args.ts, command-spec.ts, help.ts, train-args.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { commandHelp, generalHelp, parseCommandLine } from '../../src/cli/args.ts';
import { UsageError } from '../../src/cli/command-spec.ts';
import { trainOverrides, type TrainCommand } from '../../src/cli/train-args.ts';
import { loadConfig } from '../../src/config/load.ts';
import { listKeys } from '../../src/config/schema.ts';

function train(argv: string[]): TrainCommand {
  const result = parseCommandLine(argv);
  assert.equal(result.command, 'train');
  return result as TrainCommand;
}

/** Asserts a UsageError whose message matches `pattern` and ends with the usage of `usageOf`. */
function assertUsageError(argv: string[], pattern: RegExp, usageOf = 'train'): void {
  assert.throws(
    () => parseCommandLine(argv),
    (error: unknown) => {
      assert.ok(error instanceof UsageError, `expected UsageError, got ${String(error)}`);
      assert.equal(error.name, 'UsageError');
      assert.match(error.message, pattern);
      const usage = usageOf === '' ? /usage: gpt-hybrid <command>/ : new RegExp(`usage: gpt-hybrid ${usageOf} `);
      assert.match(error.message, usage);
      assert.ok(error.message.endsWith(error.usage));
      return true;
    },
    argv.join(' '),
  );
}

test('args - train with only a config file', () => {
  assert.deepEqual(parseCommandLine(['train', 'tiny.json']), { command: 'train', configPath: 'tiny.json', sets: [], quiet: false, simulate: false, overwrite: false, nnodes: 1, nodeRank: 0 });
});

test('args - train with every flag, long and short, and repeated --set in order', () => {
  const parsed = train([
    'train', 'cfg/tiny.json',
    '--out', 'runs/a',
    '--steps', '20',
    '--set', 'model.numLayers=8',
    '--backend', 'wasm',
    '--set=optimizer.lr=1e-3',
    '--quiet',
    '--set', 'data.path=x.jsonl',
  ]);
  assert.deepEqual(parsed, {
    command: 'train',
    configPath: 'cfg/tiny.json',
    out: 'runs/a',
    steps: 20,
    sets: ['model.numLayers=8', 'optimizer.lr=1e-3', 'data.path=x.jsonl'],
    backend: 'wasm',
    quiet: true,
    simulate: false,
    overwrite: false,
    nnodes: 1,
    nodeRank: 0,
  });
  const short = train(['train', '-o', 'runs/b', '-q', 'tiny.json', '--steps=3']);
  assert.equal(short.out, 'runs/b');
  assert.equal(short.quiet, true);
  assert.equal(short.steps, 3);
  assert.equal(short.configPath, 'tiny.json');
});

test('args - each backend is accepted', () => {
  for (const backend of ['tensorflow', 'webgpu', 'wasm', 'cpu'] as const) {
    assert.equal(train(['train', 'c.json', '--backend', backend]).backend, backend);
  }
});

test('args - bad --steps values are usage errors', () => {
  for (const value of ['0', 'abc', '1.5', '-1', '1e3', '', '99999999999999999999']) {
    assertUsageError(['train', 'c.json', `--steps=${value}`], new RegExp(`--steps must be a positive integer, got "${value.replace('.', '\\.')}"`));
  }
  assertUsageError(['train', 'c.json', '--steps'], /option --steps needs a value/);
  assertUsageError(['train', 'c.json', '--steps', '--quiet'], /option --steps needs a value/);
  // A negative number reads as an option: the message says how to give it, and then the value is judged.
  assertUsageError(['train', 'c.json', '--steps', '-1'], /option --steps needs a value \(.* a value that starts with '-' only as --steps=VALUE\)/);
  assertUsageError(['train', 'c.json', '--steps=-1'], /--steps must be a positive integer, got "-1"/);
});

test('args - other invalid values and flags are usage errors saying what is wrong', () => {
  assertUsageError(['train', 'c.json', '--backend', 'webgl'], /--backend must be one of tensorflow, webgpu, wasm, cpu, got "webgl"/);
  assertUsageError(['train', 'c.json', '--backend', 'wsam'], /did you mean wasm\?/);
  assertUsageError(['train', 'c.json', '--out', ''], /--out needs a folder/);
  assertUsageError(['train', 'c.json', '--out'], /option --out needs a value/);
  assertUsageError(['train', 'c.json', '--quiet=yes'], /option --quiet takes no value/);
  assertUsageError(['train', 'c.json', '--stpes', '3'], /unknown option --stpes for train; did you mean --steps\?/);
  assertUsageError(['train', 'c.json', '--frobnicate'], /unknown option --frobnicate for train(?!;)/);
  assertUsageError(['train', 'c.json', '-x'], /unknown option -x for train/);
  assertUsageError(['train', 'c.json', '--set', 'model.numLayers'], /"model\.numLayers" has no "="/);
  assertUsageError(['train', 'c.json', '--set', '=4'], /empty key/);
});

test('args - missing or extra positionals', () => {
  assertUsageError(['train'], /train needs a config file/);
  assertUsageError(['train', '--steps', '3'], /train needs a config file/);
  assertUsageError(['train', 'a.json', 'b.json'], /unexpected argument "b\.json"; train takes one config file/);
  assertUsageError(['train', 'a.json', '--set', 'a=1', 'b=2'], /each override needs its own --set: --set b=2/);
});

test('args - unknown commands and top-level flags', () => {
  assertUsageError([], /no command given/, '');
  assertUsageError(['trian', 'c.json'], /unknown command "trian"; did you mean "train"\?/, '');
  assertUsageError(['explode'], /unknown command "explode"; commands: train/, '');
  assertUsageError(['--steps', '3'], /unknown option --steps; options go after the command/, '');
  assertUsageError(['help', 'nothing'], /unknown command "nothing"/, '');
});

test('args - help and version', () => {
  for (const argv of [['--help'], ['-h'], ['help']]) {
    const result = parseCommandLine(argv);
    assert.deepEqual(result, { command: 'help', text: generalHelp() });
  }
  for (const argv of [['train', '--help'], ['train', '-h'], ['train', 'c.json', '--steps', '0', '--help'], ['--help', 'train'], ['help', 'train']]) {
    const result = parseCommandLine(argv);
    assert.deepEqual(result, { command: 'help', text: commandHelp('train') }, argv.join(' '));
  }
  assert.deepEqual(parseCommandLine(['--version']), { command: 'version' });
  assert.deepEqual(parseCommandLine(['-V']), { command: 'version' });
});

test('args - the help text documents commands, every option, every config key and the --out default', () => {
  const general = generalHelp();
  assert.match(general, /Commands:\n {2}train +train the model/);
  assert.match(general, /gpt-hybrid --version/);
  const help = commandHelp('train');
  for (const option of ['--out DIR', '--steps N', '--set KEY=VALUE', '--backend NAME', '--quiet', '--help']) {
    assert.ok(help.includes(option), option);
  }
  assert.match(help, /runs\/<config name>-<timestamp>/);
  assert.match(help, /tensorflow \| webgpu \| wasm \| cpu/);
  assert.match(help, /Examples:\n {2}gpt-hybrid train /);
  for (const { path } of listKeys()) assert.match(help, new RegExp(`\\n {2}${path.replace(/\./g, '\\.')} `), path);
  assert.match(help, /model\.preset +tiny \| gpt2-small \| gpt2-exlarge \| gpt3/);
  assert.match(help, /optimizer\.lr .*\[0\.00015\]/);
  for (const line of help.split('\n')) assert.ok(line.length <= 110, `help line too long: ${line}`);
});

test('args - trainOverrides puts --backend and --steps after the --set items', () => {
  const parsed = train(['train', 'c.json', '--set', 'seed=1', '--steps', '7', '--backend', 'cpu', '--set', 'backend=wasm']);
  assert.deepEqual(trainOverrides(parsed), ['seed=1', 'backend=wasm', 'backend=cpu', 'epochs=null', 'steps=7']);
  assert.deepEqual(trainOverrides(train(['train', 'c.json'])), []);
});

test('args - --steps and --backend win over the config file through loadConfig', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gpt-hybrid-args-'));
  try {
    writeFileSync(join(dir, 'train.jsonl'), '{"text": "a"}\n');
    writeFileSync(join(dir, 'run.json'), JSON.stringify({ data: { path: 'train.jsonl' }, epochs: 3, backend: 'wasm' }));
    const parsed = train(['train', join(dir, 'run.json'), '--steps', '5', '--backend', 'cpu']);
    const config = loadConfig(parsed.configPath, trainOverrides(parsed));
    assert.equal(config.steps, 5);
    assert.equal(config.epochs, undefined);
    assert.equal(config.backend, 'cpu');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('args - distributed train flags and their errors', () => {
  const command = parseCommandLine(['train', 'c.json', '--nnodes', '2', '--node-rank', '1', '--nproc-per-node', '1', '--job-id', 'j1', '--nats', 'nats://h:4222']);
  assert.deepEqual(command, {
    command: 'train',
    configPath: 'c.json',
    sets: [],
    quiet: false,
    simulate: false,
    overwrite: false,
    nnodes: 2,
    nodeRank: 1,
    nprocPerNode: 1,
    jobId: 'j1',
    nats: 'nats://h:4222',
  });
  assert.throws(() => parseCommandLine(['train', 'c.json', '--nnodes', '2']), /needs --job-id/);
  assert.throws(() => parseCommandLine(['train', 'c.json', '--nnodes', '2', '--node-rank', '2', '--job-id', 'j']), /must be below --nnodes 2/);
  assert.throws(() => parseCommandLine(['train', 'c.json', '--job-id', 'a.b']), /--job-id must be/);
  assert.throws(() => parseCommandLine(['train', 'c.json', '--nproc-per-node', '0']), /positive integer/);
});

test('args - torchrun\'s underscore spellings, --max-restarts, and launcher options from GPT_HYBRID_* and PET_* variables (flags win)', () => {
  const torchrun = parseCommandLine(['train', 'c.json', '--nnodes=2', '--node_rank', '1', '--nproc_per_node=1', '--max_restarts', '5', '--job_id', 'j1', '--set', 'seed=1']);
  assert.deepEqual(torchrun, { command: 'train', configPath: 'c.json', sets: ['seed=1', 'restart.max=5'], quiet: false, simulate: false, overwrite: false, nnodes: 2, nodeRank: 1, nprocPerNode: 1, jobId: 'j1' });
  assertUsageError(['train', 'c.json', '--not_an_option'], /unknown option --not_an_option for train/);

  const names = ['GPT_HYBRID_NNODES', 'PET_NNODES', 'PET_NODE_RANK', 'PET_NPROC_PER_NODE', 'PET_MAX_RESTARTS', 'PET_RDZV_ID', 'GPT_HYBRID_JOB_ID'];
  const saved = Object.fromEntries(names.map((name) => [name, process.env[name]]));
  try {
    Object.assign(process.env, { PET_NNODES: '4', GPT_HYBRID_NNODES: '2', PET_NODE_RANK: '1', PET_NPROC_PER_NODE: '3', PET_MAX_RESTARTS: '0', PET_RDZV_ID: 'torch-job' });
    assert.deepEqual(parseCommandLine(['train', 'c.json']), {
      command: 'train', configPath: 'c.json', sets: ['restart.max=0'], quiet: false, simulate: false, overwrite: false, nnodes: 2, nodeRank: 1, nprocPerNode: 3, jobId: 'torch-job',
    });
    const flagged = train(['train', 'c.json', '--node-rank', '0', '--job-id', 'mine']);
    assert.deepEqual([flagged.nodeRank, flagged.jobId], [0, 'mine']);
    process.env.PET_NNODES = '1:2';
    delete process.env.GPT_HYBRID_NNODES;
    assertUsageError(['train', 'c.json'], /\$PET_NNODES \(for --nnodes\) must be a positive integer, got "1:2"/);
  } finally {
    for (const name of names) {
      if (saved[name] === undefined) delete process.env[name];
      else process.env[name] = saved[name];
    }
  }
});

test('args - ctl takes a job and a control command', () => {
  assert.deepEqual(parseCommandLine(['ctl', 'runs/tiny', 'status']), { command: 'ctl', target: 'runs/tiny', action: 'status', timeoutMs: 5000 });
  assert.deepEqual(parseCommandLine(['ctl', 'j1', 'stop', '--nats', 'nats://x:1', '--timeout', '900']), {
    command: 'ctl',
    target: 'j1',
    action: 'stop',
    nats: 'nats://x:1',
    timeoutMs: 900,
  });
  assert.deepEqual(parseCommandLine(['ctl', 'j1', 'stop', '--checkpoint']), { command: 'ctl', target: 'j1', action: 'stop', save: true, timeoutMs: 5000 });
  assert.throws(() => parseCommandLine(['ctl', 'j1', 'pause', '--checkpoint']), /--checkpoint goes with stop/);
  assert.throws(() => parseCommandLine(['ctl', 'j1', 'puase']), /did you mean "pause"/);
  assert.throws(() => parseCommandLine(['ctl', 'j1']), /needs a job/);
});

// Tests: loadConfig (src/config/load.ts): file reading, JSON errors, data.path anchoring, blame on --set.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '../../src/config/errors.ts';
import { loadConfig } from '../../src/config/load.ts';

// root/configs/run.json refers to ../data/train.jsonl; root/work is a different current directory.
const root = mkdtempSync(join(tmpdir(), 'gpt-hybrid-load-'));
after(() => rmSync(root, { recursive: true, force: true }));
for (const folder of ['configs', 'data', 'work']) mkdirSync(join(root, folder));
writeFileSync(join(root, 'data', 'train.jsonl'), '{"text": "a"}\n');
writeFileSync(join(root, 'work', 'local.jsonl'), '{"text": "b"}\n');

function writeConfig(name: string, content: unknown): string {
  const file = join(root, 'configs', name);
  writeFileSync(file, typeof content === 'string' ? content : JSON.stringify(content, null, 2));
  return file;
}

function loadError(run: () => unknown): ConfigError {
  try {
    run();
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected ConfigError, got ${String(error)}`);
    return error;
  }
  assert.fail('expected a ConfigError');
}

const cwd = join(root, 'work');

test('load - a relative data.path in the file is relative to the file, not the current directory', () => {
  const file = writeConfig('run.json', { model: { preset: 'tiny' }, data: { path: '../data/train.jsonl' } });
  const config = loadConfig(file, [], { cwd });
  assert.equal(config.data.path, join(root, 'data', 'train.jsonl'));
  assert.equal(config.model.hiddenSize, 64);
});

test('load - a data.path given with --set is relative to the current directory', () => {
  const file = writeConfig('run.json', { data: { path: '../data/train.jsonl' } });
  assert.equal(loadConfig(file, ['data.path=local.jsonl'], { cwd }).data.path, join(cwd, 'local.jsonl'));
  // The same through an object value.
  assert.equal(loadConfig(file, ['data={"path":"local.jsonl"}'], { cwd }).data.path, join(cwd, 'local.jsonl'));
  // An absolute one is kept.
  assert.equal(loadConfig(file, [`data.path=${join(root, 'data', 'train.jsonl')}`], { cwd }).data.path, join(root, 'data', 'train.jsonl'));
});

test('load - a relative config path is taken from cwd', () => {
  writeConfig('rel.json', { data: { path: '../data/train.jsonl' } });
  const config = loadConfig('../configs/rel.json', [], { cwd });
  assert.equal(config.data.path, join(root, 'data', 'train.jsonl'));
});

test('load - overrides are applied in order, then validated', () => {
  const file = writeConfig('run.json', { model: { preset: 'tiny' }, data: { path: '../data/train.jsonl' }, epochs: 3 });
  const config = loadConfig(file, ['model.numLayers=8', 'optimizer.lr=1e-3', 'epochs=null', 'steps=20', 'backend=cpu'], { cwd });
  assert.equal(config.model.numLayers, 8);
  assert.equal(config.optimizer.lr, 1e-3);
  assert.equal(config.steps, 20);
  assert.equal(config.epochs, undefined);
  assert.equal(config.backend, 'cpu');
});

test('load - a missing data file is one of the problems, and the file is named', () => {
  const file = writeConfig('missing-data.json', { data: { path: 'nowhere.jsonl' }, batchSize: 0 });
  const error = loadError(() => loadConfig(file, [], { cwd }));
  assert.equal(error.source, file);
  assert.match(error.message, new RegExp(`invalid configuration ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(2 problems`));
  assert.match(error.message, /data\.path: .*nowhere\.jsonl: no such file \(written "nowhere\.jsonl", relative to the config file's folder\)/);
  assert.match(error.message, /batchSize: expected a positive integer, got 0/);
});

test('load - problems caused by --set say so', () => {
  const file = writeConfig('run.json', { data: { path: '../data/train.jsonl' } });
  const error = loadError(() => loadConfig(file, ['model.numLayers=0', 'data.path=gone.jsonl', 'optimizer.lrr=1'], { cwd }));
  assert.match(error.message, /model\.numLayers: expected a positive integer, got 0 \(from --set model\.numLayers=0\)/);
  assert.match(error.message, /data\.path: .*gone\.jsonl: no such file \(from --set data\.path=gone\.jsonl\)/);
  assert.match(error.message, /optimizer\.lrr: unknown key; did you mean optimizer\.lr\? \(from --set optimizer\.lrr=1\)/);
});

test('load - a JSON syntax error names the file, line and column and shows the line', () => {
  const file = writeConfig('broken.json', '{\n  "model": {"preset": "tiny"},\n  "seqLen": 64,\n}\n');
  const error = loadError(() => loadConfig(file, [], { cwd }));
  assert.equal(error.source, file);
  assert.ok(error.message.includes(file));
  assert.match(error.message, /not valid JSON at line 4, column 1: expected a property name after "," \(JSON allows no trailing comma\)/);
  assert.match(error.message, /\n {4}}\n {4}\^/);
});

test('load - comments get a hint, and an error with no position from V8 is still located', () => {
  // V8 reports "Unexpected token '/'" without an offset for this one.
  const file = writeConfig('commented.json', '{\n  // the tiny model\n  "model": {"preset": "tiny"}\n}\n');
  const error = loadError(() => loadConfig(file, [], { cwd }));
  assert.match(error.message, /line 2, column 3: .*\(JSON has no comments\)/);
});

test('load - a byte-order mark is accepted', () => {
  const file = writeConfig('bom.json', `\uFEFF${JSON.stringify({ data: { path: '../data/train.jsonl' } })}`);
  assert.equal(loadConfig(file, [], { cwd }).data.path, join(root, 'data', 'train.jsonl'));
});

test('load - a missing config file, a folder, or a non-object says so', () => {
  assert.match(loadError(() => loadConfig(join(root, 'configs', 'absent.json'), [])).message, /absent\.json.*\n {2}cannot read the config file: no such file/);
  assert.match(loadError(() => loadConfig(join(root, 'configs'), [])).message, /cannot read the config file: it is a folder/);
  const array = writeConfig('array.json', '[1, 2]');
  assert.match(loadError(() => loadConfig(array, [])).message, /expected a JSON object at the top level, got an array/);
});

test('load - a malformed --set is reported before the file is read', () => {
  const error = loadError(() => loadConfig(join(root, 'configs', 'absent.json'), ['oops']));
  assert.match(error.message, /"oops" has no "="/);
});

test('load - parallel.data "auto" is the world over pipeline x tensor, and needs the world size', () => {
  const file = writeConfig('auto.json', { model: { preset: 'tiny' }, parallel: { data: 'auto' }, data: { path: '../data/train.jsonl' } });
  assert.equal(loadConfig(file, [], { cwd, worldSize: 3 }).parallel.data, 3);
  assert.throws(() => loadConfig(file, [], { cwd }), /parallel\.data: "auto" needs the world size/);
  assert.throws(() => loadConfig(file, ['parallel.pipeline=2', 'numMicroBatches=2', 'batchSize=8'], { cwd, worldSize: 3 }), /does not divide/);
  assert.equal(loadConfig(file, ['parallel.pipeline=2', 'numMicroBatches=2', 'batchSize=8'], { cwd, worldSize: 4 }).parallel.data, 2);
});

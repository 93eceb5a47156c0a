// Tests: --set key=value parsing and application (src/config/overrides.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { applyOverrides, parseOverride, parseOverrides } from '../../src/config/overrides.ts';
import { ConfigError } from '../../src/config/errors.ts';

test('overrides - values are JSON when they parse, else text', () => {
  const cases: Array<[string, unknown]> = [
    ['a=8', 8],
    ['a=1e-3', 1e-3],
    ['a=-2.5', -2.5],
    ['a=true', true],
    ['a=false', false],
    ['a=null', null],
    ['a=[1,2]', [1, 2]],
    ['a={"b":1}', { b: 1 }],
    ['a="7"', '7'],
    ['a=cpu', 'cpu'],
    ['a=data/train.jsonl', 'data/train.jsonl'],
    ['a=', ''],
    ['a=x=y', 'x=y'],
    ['a=True', 'True'],
  ];
  for (const [item, expected] of cases) {
    assert.deepEqual(parseOverride(item).value, expected, item);
  }
});

test('overrides - nested dotted paths set deep keys and keep their siblings', () => {
  const input = { model: { numLayers: 4, hiddenSize: 128 }, parallel: { tensor: { mode: '1d', size: 1 } } };
  const result = applyOverrides(input, ['model.numLayers=8', 'parallel.tensor.size=2', 'optimizer.lr=1e-3', 'backend=cpu']);
  assert.deepEqual(result, {
    model: { numLayers: 8, hiddenSize: 128 },
    parallel: { tensor: { mode: '1d', size: 2 } },
    optimizer: { lr: 1e-3 },
    backend: 'cpu',
  });
});

test('overrides - missing intermediate objects are created, null ones replaced', () => {
  assert.deepEqual(applyOverrides({}, ['parallel.tensor.size=4']), { parallel: { tensor: { size: 4 } } });
  assert.deepEqual(applyOverrides({ data: null }, ['data.path=a.jsonl']), { data: { path: 'a.jsonl' } });
});

test('overrides - the input is not modified and later items win', () => {
  const input = { model: { numLayers: 4 } };
  const result = applyOverrides(input, ['model.numLayers=8', 'model.numLayers=6']);
  assert.deepEqual(input, { model: { numLayers: 4 } });
  assert.deepEqual(result, { model: { numLayers: 6 } });
});

test('overrides - an object value replaces the key instead of merging', () => {
  const result = applyOverrides({ data: { path: 'a', shuffle: false } }, ['data={"path":"b"}']);
  assert.deepEqual(result, { data: { path: 'b' } });
});

test('overrides - parsed Override objects are applied like strings', () => {
  const parsed = parseOverride('seed=7');
  assert.deepEqual(applyOverrides({ seed: 1 }, [parsed, 'logInterval=5']), { seed: 7, logInterval: 5 });
});

test('overrides - malformed items are clear errors, all reported together', () => {
  assert.throws(
    () => parseOverrides(['model.numLayers8', '=3', 'model..x=1', '.a=1', 'a.=1', 'fine=1']),
    (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.equal(error.name, 'ConfigError');
      assert.equal(error.problems.length, 5);
      assert.match(error.message, /"model\.numLayers8" has no "="/);
      assert.match(error.message, /"=3" has an empty key/);
      assert.match(error.message, /"model\.\.x=1".*empty part/);
      assert.match(error.message, /"\.a=1".*empty part/);
      assert.match(error.message, /"a\.=1".*empty part/);
      assert.doesNotMatch(error.message, /fine/);
      return true;
    },
  );
  assert.throws(() => applyOverrides({}, ['novalue']), /has no "="/);
});

test('overrides - setting below a non-object names the blocking key', () => {
  assert.throws(
    () => applyOverrides({ model: { numLayers: 4 } }, ['model.numLayers.x=1']),
    (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.equal(error.problems[0]!.path, 'model.numLayers.x');
      assert.match(error.message, /model\.numLayers is 4, not an object/);
      return true;
    },
  );
});

test('overrides - __proto__ is refused and nothing is polluted', () => {
  assert.throws(() => applyOverrides({}, ['__proto__.polluted=1']), /"__proto__" is not a config key/);
  assert.throws(() => applyOverrides({}, ['a.__proto__.polluted=1']), /__proto__/);
  // constructor/prototype are ordinary own keys here (validation rejects them later as unknown).
  const result = applyOverrides({}, ['constructor.prototype.polluted=1']) as Record<string, unknown>;
  assert.deepEqual(result, { constructor: { prototype: { polluted: 1 } } });
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
});

test('overrides - the input must be an object', () => {
  assert.throws(() => applyOverrides([] as unknown as object, ['a=1']), /expected a JSON object.*array/);
});

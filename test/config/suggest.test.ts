// Tests: edit distance and "did you mean" (src/config/suggest.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closestMatch, editDistance } from '../../src/config/suggest.ts';

test('suggest - edit distance counts insertions, deletions, substitutions and swaps as 1', () => {
  const cases: Array<[string, string, number]> = [
    ['', '', 0],
    ['', 'abc', 3],
    ['abc', 'abc', 0],
    ['numLayers', 'numLayer', 1],
    ['numLayers', 'nmuLayers', 1],
    ['numLayers', 'numLayerss', 1],
    ['seqLen', 'seqLan', 1],
    ['kitten', 'sitting', 3],
    ['ca', 'abc', 3],
  ];
  for (const [a, b, expected] of cases) {
    assert.equal(editDistance(a, b), expected, `${a} / ${b}`);
    assert.equal(editDistance(b, a), expected, `${b} / ${a}`);
  }
});

test('suggest - closest match ignores case, underscores and dashes', () => {
  const keys = ['numLayers', 'numMicroBatches', 'seqLen', 'lr'];
  assert.equal(closestMatch('NUM_MICRO_BATCHES', keys), 'numMicroBatches');
  assert.equal(closestMatch('num_layers', keys), 'numLayers');
  assert.equal(closestMatch('numlayer', keys), 'numLayers');
  assert.equal(closestMatch('seq_len', keys), 'seqLen');
});

test('suggest - nothing when no candidate is close, and short words need near-exact matches', () => {
  const keys = ['numLayers', 'seqLen', 'lr'];
  assert.equal(closestMatch('banana', keys), undefined);
  assert.equal(closestMatch('xy', keys), undefined);
  assert.equal(closestMatch('l', keys), 'lr');
  assert.equal(closestMatch('anything', []), undefined);
});

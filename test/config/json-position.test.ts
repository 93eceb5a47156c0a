// Tests: locating JSON syntax errors (src/config/json-position.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lineAndColumn, locateJsonError } from '../../src/config/json-position.ts';

test('json-position - common hand-editing mistakes point at the right spot', () => {
  const cases: Array<[string, number, number, RegExp]> = [
    ['{"a": 1,}', 1, 9, /no trailing comma/],
    ['[1, 2,]', 1, 7, /no trailing comma/],
    ['{\n  // note\n  "a": 1\n}', 2, 3, /no comments/],
    ["{'a': 1}", 1, 2, /double quotes/],
    ['{"a": tru}', 1, 7, /a value/],
    ['{"a" 1}', 1, 6, /":"/],
    ['{"a": 1 "b": 2}', 1, 9, /"," or "}"/],
    ['{"a": [1, 2}', 1, 12, /"," or "]"/],
    ['{"a": 1', 1, 8, /the text ended/],
    ['"abc', 1, 5, /closing double quote/],
    ['"a\tb"', 1, 3, /control character/],
    ['"\\x"', 1, 2, /valid escape/],
    ['{"a": 01}', 1, 8, /"," or "}"/],
    ['{"a": -}', 1, 7, /a number/],
    ['{} {}', 1, 4, /end of the text/],
    ['', 1, 1, /text ended/],
  ];
  for (const [text, line, column, expected] of cases) {
    const found = locateJsonError(text);
    assert.ok(found, `no error found in ${JSON.stringify(text)}`);
    assert.deepEqual([found.line, found.column], [line, column], JSON.stringify(text));
    assert.match(found.expected, expected, JSON.stringify(text));
  }
});

test('json-position - agrees with JSON.parse on what is valid, over many mutated documents', () => {
  const base = JSON.stringify({ model: { preset: 'tiny', numLayers: 4, drop: -0.5e-3 }, list: [1, true, null, 'x\\"y\u00e9'], s: 'a\nb' }, null, 2);
  const alphabet = ['{', '}', '[', ']', ',', ':', '"', '\\', '/', '-', '0', '1', 'e', '.', ' ', '\n', 't', 'n', "'", 'u'];
  // A fixed linear congruential generator keeps the test deterministic.
  let state = 12345;
  const next = (n: number) => {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    return state % n;
  };
  let invalid = 0;
  for (let trial = 0; trial < 3000; trial++) {
    let text = base;
    for (let edits = 1 + next(2); edits > 0; edits--) {
      const at = next(text.length + 1);
      const kind = next(3);
      const char = alphabet[next(alphabet.length)]!;
      text = kind === 0 ? text.slice(0, at) + char + text.slice(at) : kind === 1 ? text.slice(0, at) + text.slice(at + 1) : text.slice(0, at) + char + text.slice(at + 1);
    }
    let parses = true;
    try {
      JSON.parse(text);
    } catch {
      parses = false;
    }
    const found = locateJsonError(text);
    assert.equal(found === undefined, parses, `disagreement on ${JSON.stringify(text)}`);
    if (found) {
      invalid++;
      assert.ok(found.offset >= 0 && found.offset <= text.length);
    }
  }
  assert.ok(invalid > 1000, `only ${invalid} invalid documents generated`);
});

test('json-position - line and column are 1-based and count newlines', () => {
  assert.deepEqual(lineAndColumn('ab\ncd\nef', 0), { line: 1, column: 1 });
  assert.deepEqual(lineAndColumn('ab\ncd\nef', 4), { line: 2, column: 2 });
  assert.deepEqual(lineAndColumn('ab\ncd\nef', 6), { line: 3, column: 1 });
});

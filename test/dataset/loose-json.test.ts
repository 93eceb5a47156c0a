// Tests: the loose-JSON reader (line numbers in errors, blank lines, skipBadLines counting).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LooseJsonError, parseLooseJson } from '../../src/dataset/loose-json.ts';

const bytes = (text: string) => new TextEncoder().encode(text);

test('loose-json - one record per non-blank line, with 1-based line numbers; CRLF and a BOM are fine', () => {
  const result = parseLooseJson(bytes('\uFEFF{"text": "a"}\r\n\n   \n{"text": "b", "url": "x"}\n{"text": ""}'), 'in.jsonl');
  assert.deepEqual(result.records, [
    { text: 'a', line: 1 },
    { text: 'b', line: 4 },
    { text: '', line: 5 },
  ]);
  assert.equal(result.badLines, 0);
});

const badCases: [string, string, RegExp][] = [
  ['invalid JSON', '{"text": "a"\n', /not valid JSON/],
  ['not an object', '["text"]\n', /expected a JSON object, got an array/],
  ['a bare string', '"text"\n', /expected a JSON object, got string/],
  ['no text field', '{"body": "a"}\n', /no "text" field/],
  ['text not a string', '{"text": 3}\n', /"text" is number, expected a string/],
];
for (const [name, line, reason] of badCases) {
  test(`loose-json - ${name} is an error naming file and line`, () => {
    const input = bytes(`{"text": "ok"}\n\n${line}{"text": "ok"}\n`);
    assert.throws(
      () => parseLooseJson(input, 'corpus.jsonl'),
      (err: unknown) => {
        assert.ok(err instanceof LooseJsonError);
        assert.equal(err.file, 'corpus.jsonl');
        assert.equal(err.line, 3);
        assert.match(err.message, /^corpus\.jsonl:3: /);
        assert.match(err.message, reason);
        return true;
      },
    );
  });
}

test('loose-json - skipBadLines counts and skips bad lines and reports the first ones', () => {
  const result = parseLooseJson(bytes('{"text": "a"}\nnope\n{"text": 1}\n\n{"text": "b"}\n[]\n'), 'x.jsonl', { skipBadLines: true });
  assert.deepEqual(result.records.map((r) => r.text), ['a', 'b']);
  assert.equal(result.badLines, 3);
  assert.deepEqual(result.badLineSamples.map((b) => b.line), [2, 3, 6]);
});

test('loose-json - invalid UTF-8 is a bad line', () => {
  const input = new Uint8Array([...bytes('{"text": "'), 0xff, ...bytes('"}\n')]);
  assert.throws(() => parseLooseJson(input, 'u.jsonl'), /u\.jsonl:1: not valid UTF-8/);
});

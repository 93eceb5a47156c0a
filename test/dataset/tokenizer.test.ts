// Tests: the GPT-2 tokenizer wrapper (ids match GPT-2's, EOS handling, round trips).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { readFileSync } from 'node:fs';
import { EOS_TOKEN_ID, GPT2_VOCAB_SIZE, decode, encode, encodePrefix } from '../../src/dataset/tokenizer.ts';

test('tokenizer - "Hello world" encodes to GPT-2 ids [15496, 995]', () => {
  assert.deepEqual(encode('Hello world'), [15496, 995]);
});

test('tokenizer - more GPT-2 ids: leading-space words and a paragraph break', () => {
  assert.deepEqual(encode(' The quick brown fox'), [383, 2068, 7586, 21831]);
  assert.deepEqual(encode('\n\n'), [628]);
  assert.deepEqual(encode(''), []);
});

test('tokenizer - EOS is <|endoftext|> = 50256, the last id of the 50257-entry vocabulary', () => {
  assert.equal(EOS_TOKEN_ID, 50256);
  assert.equal(GPT2_VOCAB_SIZE, 50257);
  assert.equal(decode([EOS_TOKEN_ID]), '<|endoftext|>');
});

test('tokenizer - "<|endoftext|>" inside raw text is plain text, never the EOS id', () => {
  const ids = encode('a<|endoftext|>b');
  assert.ok(!ids.includes(EOS_TOKEN_ID), `got ${ids}`);
  assert.equal(decode(ids), 'a<|endoftext|>b');
});

test('tokenizer - decode inverts encode on non-ASCII text', () => {
  const text = 'Grüße, 世界! 🙂 "quoted" -- and tabs\there.';
  assert.equal(decode(encode(text)), text);
});

test('tokenizer - decode rejects ids outside the vocabulary, naming the position', () => {
  assert.throws(() => decode([15496, 50257]), /50257 at position 1/);
  assert.throws(() => decode([-1]), /-1 at position 0/);
});

test('tokenizer - encodePrefix equals the truncated full encoding', () => {
  const corpus = readFileSync('data/brown-sample.jsonl', 'utf8').trimEnd().split('\n').slice(0, 40);
  const texts = [
    ...corpus.map((line) => (JSON.parse(line) as { text: string }).text),
    "It's   spaced\n\n  out,  isn't it?  ".repeat(60),
    '1234567 8901 23.45 $6,789 '.repeat(80) + 'tail words here',
    'Grüße aus Köln — 世界 ünd mehr Wörter '.repeat(50),
    // No piece boundary at all: the fallback encodes everything (BPE is quadratic in a piece's length: keep it short).
    'nospacesatall'.repeat(20),
  ];
  for (const text of texts) {
    const full = encode(text);
    for (const maxTokens of [1, 7, 64, 128, 256, 1024]) {
      assert.deepEqual(encodePrefix(text, maxTokens), full.slice(0, maxTokens), `maxTokens ${maxTokens}, text ${JSON.stringify(text.slice(0, 40))}`);
    }
  }
});

// Tests: the GPT-2 tokenizer wrapper (ids match GPT-2's, EOS handling, round trips).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { EOS_TOKEN_ID, GPT2_VOCAB_SIZE, decode, encode } from '../../src/dataset/tokenizer.ts';

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

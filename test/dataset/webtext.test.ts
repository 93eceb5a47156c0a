// Tests: WebtextDataset loading (padding, truncation, masks) and its token cache (reuse, stale, corrupt, unwritable).
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { TOKEN_CACHE_MAGIC } from '../../src/dataset/token-cache.ts';
import { EOS_TOKEN_ID, encode } from '../../src/dataset/tokenizer.ts';
import { loadWebtextDataset, type LoadWebtextOptions } from '../../src/dataset/webtext.ts';

const root = mkdtempSync(join(tmpdir(), 'gpt-hybrid-webtext-'));
after(() => rmSync(root, { recursive: true, force: true }));
let dirCount = 0;

const TEXTS = ['Hello world', 'The quick brown fox jumps over the lazy dog, again and again and again.', 'a'];

function writeCorpus(texts: string[], extra = ''): string {
  const dir = join(root, `case-${dirCount++}`);
  mkdirSync(dir);
  const path = join(dir, 'corpus.jsonl');
  writeFileSync(path, texts.map((text) => JSON.stringify({ text })).join('\n') + '\n' + extra);
  return path;
}

function load(path: string, seqLen: number, extra: Partial<LoadWebtextOptions> = {}) {
  const logs: string[] = [];
  const result = loadWebtextDataset(path, { seqLen, skipBadLines: false, log: (m) => logs.push(m), ...extra });
  return result.then((dataset) => ({ dataset, logs }));
}

function tokenFiles(path: string): string[] {
  const dir = join(path, '..');
  return readdirSync(dir).filter((name) => name.endsWith('.tokens'));
}

test('webtext - rows are tokenized, truncated to seqLen and right-padded with EOS; mask marks real tokens', async () => {
  const seqLen = 8;
  const { dataset } = await load(writeCorpus(TEXTS), seqLen);
  assert.equal(dataset.numSamples, 3);
  assert.equal(dataset.seqLen, seqLen);
  assert.equal(dataset.inputIds.length, 3 * seqLen);
  assert.equal(dataset.attentionMask.length, 3 * seqLen);
  const row = (i: number) => Array.from(dataset.inputIds.subarray(i * seqLen, (i + 1) * seqLen));
  const maskRow = (i: number) => Array.from(dataset.attentionMask.subarray(i * seqLen, (i + 1) * seqLen));
  const eos = EOS_TOKEN_ID;
  assert.deepEqual(row(0), [15496, 995, eos, eos, eos, eos, eos, eos]);
  assert.deepEqual(maskRow(0), [1, 1, 0, 0, 0, 0, 0, 0]);
  assert.deepEqual(row(1), encode(TEXTS[1]).slice(0, seqLen));
  assert.ok(encode(TEXTS[1]).length > seqLen, 'the second text must be long enough to be truncated');
  assert.deepEqual(maskRow(1), [1, 1, 1, 1, 1, 1, 1, 1]);
  assert.deepEqual(maskRow(2), [1, 0, 0, 0, 0, 0, 0, 0]);
  assert.equal(dataset.fromCache, false);
  assert.equal(dataset.badLines, 0);
});

test('webtext - the second load reads the cache and returns equal arrays', async () => {
  const path = writeCorpus(TEXTS);
  const first = await load(path, 16);
  const second = await load(path, 16);
  assert.equal(first.dataset.fromCache, false);
  assert.equal(second.dataset.fromCache, true);
  assert.equal(second.dataset.cachePath, first.dataset.cachePath);
  assert.match(first.dataset.cachePath ?? '', /corpus\.jsonl\.seq16\.[0-9a-f]{16}\.tokens$/);
  assert.deepEqual(second.dataset.inputIds, first.dataset.inputIds);
  assert.deepEqual(second.dataset.attentionMask, first.dataset.attentionMask);
  assert.equal(second.dataset.numSamples, 3);
  assert.equal(readFileSync(first.dataset.cachePath!).subarray(0, 8).toString(), TOKEN_CACHE_MAGIC);
  // No temporary file is left behind by the atomic write.
  assert.deepEqual(readdirSync(join(path, '..')).sort(), ['corpus.jsonl', tokenFiles(path)[0]].sort());
});

test('webtext - different seqLen values keep separate caches', async () => {
  const path = writeCorpus(TEXTS);
  await load(path, 4);
  const other = await load(path, 8);
  assert.equal(other.dataset.fromCache, false);
  assert.equal(tokenFiles(path).length, 2);
  assert.equal((await load(path, 4)).dataset.fromCache, true);
});

test('webtext - a changed input rebuilds, says why, and removes the stale cache', async () => {
  const path = writeCorpus(TEXTS);
  const first = await load(path, 8);
  writeFileSync(path, JSON.stringify({ text: 'something else entirely' }) + '\n');
  const second = await load(path, 8);
  assert.equal(second.dataset.fromCache, false);
  assert.equal(second.dataset.numSamples, 1);
  assert.notEqual(second.dataset.cachePath, first.dataset.cachePath);
  assert.ok(second.logs.some((m) => /stale/.test(m) && /changed/.test(m)), second.logs.join('\n'));
  assert.deepEqual(tokenFiles(path), [second.dataset.cachePath!.split('/').pop()]);
});

const corruptions: [string, (cachePath: string) => void, RegExp][] = [
  ['a flipped payload byte', (p) => flipByte(p, -5), /checksum mismatch/],
  ['a flipped magic byte', (p) => flipByte(p, 0), /bad magic/],
  ['truncation', (p) => truncateSync(p, readFileSync(p).length - 3), /truncated/],
  ['truncation inside the header', (p) => truncateSync(p, 10), /shorter than/],
  ['an unknown version', (p) => flipByte(p, 8), /format version/],
  ['a crafted token id past the vocabulary, checksum recomputed', (p) => craftPayload(p, (payload) => payload.writeUInt16LE(0xffff, 2)), /token id 65535 of sample 0 is outside the vocabulary of 50257/],
  ['a crafted sample length past seqLen, checksum recomputed', (p) => craftPayload(p, (payload) => payload.writeUInt32LE(9, payload.length - 4)), /claims 9 tokens, more than the 8/],
];
for (const [name, corrupt, reason] of corruptions) {
  test(`webtext - a cache damaged by ${name} is rebuilt with a log line saying why`, async () => {
    const path = writeCorpus(TEXTS);
    const first = await load(path, 8);
    corrupt(first.dataset.cachePath!);
    const second = await load(path, 8);
    assert.equal(second.dataset.fromCache, false);
    assert.ok(second.logs.some((m) => reason.test(m) && /rebuilding/.test(m)), second.logs.join('\n'));
    assert.deepEqual(second.dataset.inputIds, first.dataset.inputIds);
    const third = await load(path, 8);
    assert.equal(third.dataset.fromCache, true, 'the rebuilt cache must be valid');
  });
}

/** Rewrites the cache's payload (after the 96-byte header) and its SHA-256 (header bytes 64-95), as a crafted file would. */
function craftPayload(path: string, change: (payload: Buffer) => void): void {
  const bytes = readFileSync(path);
  change(bytes.subarray(96));
  createHash('sha256').update(bytes.subarray(96)).digest().copy(bytes, 64);
  writeFileSync(path, bytes);
}

function flipByte(path: string, offset: number): void {
  const bytes = readFileSync(path);
  const at = offset < 0 ? bytes.length + offset : offset;
  bytes[at] ^= 0xff;
  writeFileSync(path, bytes);
}

test('webtext - when the cache cannot be written, loading logs it and continues without a cache', async () => {
  const path = writeCorpus(TEXTS);
  const probe = await load(path, 8);
  const cachePath = probe.dataset.cachePath!;
  rmSync(cachePath);
  // A directory where the cache file belongs makes both the read and the rename fail, as a read-only
  // directory would (which root, running these tests, cannot simulate with chmod).
  mkdirSync(join(cachePath, 'blocker'), { recursive: true });
  const { dataset, logs } = await load(path, 8);
  assert.equal(dataset.fromCache, false);
  assert.equal(dataset.cachePath, null);
  assert.deepEqual(dataset.inputIds, probe.dataset.inputIds);
  assert.ok(logs.some((m) => /cannot write token cache/.test(m) && /continuing without a cache/.test(m)), logs.join('\n'));
  assert.deepEqual(readdirSync(join(path, '..')).filter((name) => name.includes('.tmp-')), [], 'temporary file left behind');
});

test('webtext - a bad line is an error naming the file and line', async () => {
  const path = writeCorpus(TEXTS, 'not json\n');
  await assert.rejects(load(path, 8), (err: Error) => err.message.includes(`${path}:4:`) && /not valid JSON/.test(err.message));
});

test('webtext - skipBadLines counts bad lines; a cache built that way does not hide them from a strict run', async () => {
  const path = writeCorpus(TEXTS, '{"nope": 1}\n\n[1]\n');
  const { dataset, logs } = await load(path, 8, { skipBadLines: true });
  assert.equal(dataset.numSamples, 3);
  assert.equal(dataset.badLines, 2);
  assert.ok(logs.some((m) => /skipped 2 bad line/.test(m) && /line 4/.test(m) && /line 6/.test(m)), logs.join('\n'));
  const cached = await load(path, 8, { skipBadLines: true });
  assert.equal(cached.dataset.fromCache, true);
  assert.equal(cached.dataset.badLines, 2);
  await assert.rejects(load(path, 8), /corpus\.jsonl:4: the object has no "text" field/);
});

test('webtext - an input with no valid line is an error naming the file', async () => {
  const path = writeCorpus([], '\n\n{"x": 1}\n');
  await assert.rejects(load(path, 8, { skipBadLines: true }), (err: Error) => err.message.includes(path) && /no samples/.test(err.message));
});

test('webtext - a missing input is an error naming the path', async () => {
  await assert.rejects(load(join(root, 'missing.jsonl'), 8), /cannot read dataset .*missing\.jsonl/);
});

test('webtext - progress is reported periodically and ends at (total, total)', async () => {
  const texts = Array.from({ length: 250 }, (_, i) => `sample number ${i}`);
  const calls: [number, number][] = [];
  await load(writeCorpus(texts), 8, { onProgress: (done, total) => calls.push([done, total]) });
  assert.ok(calls.length >= 10 && calls.length <= 260, `${calls.length} progress calls`);
  assert.deepEqual(calls[calls.length - 1], [250, 250]);
  for (let i = 1; i < calls.length; i++) assert.ok(calls[i][0] > calls[i - 1][0], 'progress must increase');
});

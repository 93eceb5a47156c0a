/**
 * Implements: the reader for "loose JSON" corpora, the seed's webtext format: one `{"text": "..."}` object
 * per line, blank lines ignored. Other keys on a line are allowed and ignored.
 *
 * The file is scanned as bytes, one line at a time, so a corpus larger than V8's maximum string length
 * (about 512 MiB) still loads.
 */
import { readFileSync } from 'node:fs';

export interface LooseJsonRecord {
  text: string;
  /** 1-based line number in the file. */
  line: number;
}

export interface BadLine {
  line: number;
  reason: string;
}

export interface LooseJsonResult {
  records: LooseJsonRecord[];
  /** How many non-blank lines were skipped (only non-zero with `skipBadLines`). */
  badLines: number;
  /** The first few skipped lines, for a log message. */
  badLineSamples: BadLine[];
}

export interface LooseJsonOptions {
  /** Count and skip malformed lines instead of throwing on the first one. */
  skipBadLines?: boolean;
}

const MAX_BAD_LINE_SAMPLES = 5;
const NEWLINE = 0x0a;
const CARRIAGE_RETURN = 0x0d;

export class LooseJsonError extends Error {
  constructor(
    readonly file: string,
    readonly line: number,
    readonly reason: string,
  ) {
    super(
      `${file}:${line}: ${reason}. Each non-blank line must be a JSON object with a string "text" field; ` +
        `fix the line, or set data.skipBadLines to skip such lines.`,
    );
    this.name = 'LooseJsonError';
  }
}

export function readLooseJson(file: string, options: LooseJsonOptions = {}): LooseJsonResult {
  return parseLooseJson(readFileSync(file), file, options);
}

/** `fileName` is used in error messages only. */
export function parseLooseJson(bytes: Uint8Array, fileName: string, options: LooseJsonOptions = {}): LooseJsonResult {
  const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false });
  const records: LooseJsonRecord[] = [];
  const badLineSamples: BadLine[] = [];
  let badLines = 0;
  let lineNumber = 0;
  let start = 0;
  while (start < bytes.length) {
    let end = bytes.indexOf(NEWLINE, start);
    if (end < 0) end = bytes.length;
    lineNumber++;
    let contentEnd = end;
    if (contentEnd > start && bytes[contentEnd - 1] === CARRIAGE_RETURN) contentEnd--;
    // The decoder strips a UTF-8 byte-order mark, which only ever appears at the start of line 1.
    const outcome = parseLine(decoder, bytes.subarray(start, contentEnd));
    if (typeof outcome === 'string') {
      if (!options.skipBadLines) throw new LooseJsonError(fileName, lineNumber, outcome);
      badLines++;
      if (badLineSamples.length < MAX_BAD_LINE_SAMPLES) badLineSamples.push({ line: lineNumber, reason: outcome });
    } else if (outcome !== null) {
      records.push({ text: outcome.text, line: lineNumber });
    }
    start = end + 1;
  }
  return { records, badLines, badLineSamples };
}

/** Returns the text, null for a blank line, or a string saying what is wrong. */
function parseLine(decoder: TextDecoder, lineBytes: Uint8Array): { text: string } | null | string {
  let line: string;
  try {
    line = decoder.decode(lineBytes);
  } catch {
    return 'not valid UTF-8';
  }
  if (line.trim() === '') return null;
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch (err) {
    return `not valid JSON (${(err as Error).message})`;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return `expected a JSON object, got ${Array.isArray(value) ? 'an array' : value === null ? 'null' : typeof value}`;
  }
  const text = (value as Record<string, unknown>).text;
  if (text === undefined) return 'the object has no "text" field';
  if (typeof text !== 'string') return `"text" is ${text === null ? 'null' : typeof text}, expected a string`;
  return { text };
}

/**
 * Implements: finding where JSON text goes wrong, as line and column.
 * V8's JSON.parse gives an offset only for some errors ("Unexpected token 't', ... is not valid JSON"
 * has none), so when it fails we re-scan the text with this small strict checker to point at the spot.
 * Used only after JSON.parse has failed; it never produces values.
 */

export interface JsonSyntaxProblem {
  /** 0-based offset into the text. */
  offset: number;
  /** 1-based line and column. */
  line: number;
  column: number;
  /** What was expected there, with a hint for the usual hand-editing mistakes (comments, trailing commas). */
  expected: string;
}

class Stop {
  constructor(
    readonly offset: number,
    readonly expected: string,
  ) {}
}

/** The first syntax error in `text`, or undefined when it is valid JSON. */
export function locateJsonError(text: string): JsonSyntaxProblem | undefined {
  let at = 0;
  const fail = (expected: string): never => {
    throw new Stop(at, expected);
  };
  const skipSpace = () => {
    while (at < text.length && ' \t\n\r'.includes(text[at]!)) at++;
  };
  const hintFor = (what: string): string => {
    if (text.startsWith('//', at) || text.startsWith('/*', at)) return `${what} (JSON has no comments)`;
    if (text[at] === "'") return `${what} (JSON strings use double quotes)`;
    return what;
  };

  const value = (): void => {
    skipSpace();
    const c = text[at];
    if (c === '{') return object();
    if (c === '[') return array();
    if (c === '"') return string();
    if (c === '-' || (c !== undefined && c >= '0' && c <= '9')) return number();
    for (const literal of ['true', 'false', 'null']) {
      if (text.startsWith(literal, at)) {
        at += literal.length;
        return;
      }
    }
    fail(hintFor(c === undefined ? 'a value, but the text ended' : 'a value (object, array, string, number, true, false or null)'));
  };

  const object = (): void => {
    at++; // {
    skipSpace();
    if (text[at] === '}') {
      at++;
      return;
    }
    for (;;) {
      skipSpace();
      if (text[at] !== '"') fail(hintFor(text[at] === '}' ? 'a property name after "," (JSON allows no trailing comma)' : 'a double-quoted property name'));
      string();
      skipSpace();
      if (text[at] !== ':') fail(hintFor('":" after the property name'));
      at++;
      value();
      skipSpace();
      if (text[at] === ',') {
        at++;
        continue;
      }
      if (text[at] === '}') {
        at++;
        return;
      }
      fail(hintFor(at >= text.length ? '"," or "}", but the text ended' : '"," or "}" after a property value'));
    }
  };

  const array = (): void => {
    at++; // [
    skipSpace();
    if (text[at] === ']') {
      at++;
      return;
    }
    for (;;) {
      skipSpace();
      if (text[at] === ']') fail('a value after "," (JSON allows no trailing comma)');
      value();
      skipSpace();
      if (text[at] === ',') {
        at++;
        continue;
      }
      if (text[at] === ']') {
        at++;
        return;
      }
      fail(hintFor(at >= text.length ? '"," or "]", but the text ended' : '"," or "]" after an array element'));
    }
  };

  const string = (): void => {
    at++; // opening quote
    for (;;) {
      const c = text[at];
      if (c === undefined) fail('a closing double quote, but the text ended');
      if (c === '"') {
        at++;
        return;
      }
      if (c! < ' ') fail('no raw control character (newline, tab) inside a string; escape it');
      if (c === '\\') {
        const escape = text[at + 1];
        if (escape !== undefined && '"\\/bfnrt'.includes(escape)) at += 2;
        else if (escape === 'u' && /^[0-9a-fA-F]{4}$/.test(text.slice(at + 2, at + 6))) at += 6;
        else fail('a valid escape (\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)');
      } else {
        at++;
      }
    }
  };

  const number = (): void => {
    const match = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/.exec(text.slice(at));
    if (match === null || match[0] === '-') fail('a number');
    at += match![0].length;
  };

  try {
    value();
    skipSpace();
    if (at < text.length) fail(hintFor('the end of the text after the top-level value'));
    return undefined;
  } catch (error) {
    if (!(error instanceof Stop)) throw error;
    return { offset: error.offset, ...lineAndColumn(text, error.offset), expected: error.expected };
  }
}

export function lineAndColumn(text: string, offset: number): { line: number; column: number } {
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < offset && i < text.length; i++) {
    if (text[i] === '\n') {
      line++;
      lineStart = i + 1;
    }
  }
  return { line, column: offset - lineStart + 1 };
}

/**
 * Implements: the GPT-2 byte-pair tokenizer (r50k_base, the same ranks as Hugging Face's `gpt2`), through
 * js-tiktoken's lite build so only GPT-2's ranks are loaded.
 *
 * Special tokens: "<|endoftext|>" written inside raw text is encoded as ordinary text (`<`, `|`, `endo`, ...),
 * never as EOS id 50256. Only the dataset's padding produces id 50256, so a document cannot forge a
 * document boundary. (Hugging Face's tokenizer does the opposite by default; we prefer the safer reading.)
 */
import { Tiktoken } from 'js-tiktoken/lite';
import r50kBase from 'js-tiktoken/ranks/r50k_base';

/** `<|endoftext|>`: GPT-2's end-of-text token, also its unk token, which the seed pads with. */
export const EOS_TOKEN_ID = 50256;
export const GPT2_VOCAB_SIZE = 50257;
/** Recorded in token caches so a cache made by another tokenizer is never reused. */
export const TOKENIZER_NAME = 'r50k_base';

let encoder: Tiktoken | undefined;

// Building the rank map takes a few hundred ms; do it only when text is first encoded.
function getEncoder(): Tiktoken {
  encoder ??= new Tiktoken(r50kBase);
  return encoder;
}

export function encode(text: string): number[] {
  // allowedSpecial = [] and disallowedSpecial = []: special-token text is neither emitted as a special id
  // nor rejected; it is byte-pair encoded like any other text.
  return getEncoder().encode(text, [], []);
}

/**
 * The first maxTokens ids of encode(text), without encoding the rest of a long text. GPT-2's pre-tokenizer
 * always starts a new piece at a space that sits between two letters (the letter run before it cannot take
 * the space, and " ?\p{L}+" claims it), and pieces are byte-pair encoded independently, so encoding the text
 * up to such a space yields exactly the leading ids of the whole encoding.
 */
export function encodePrefix(text: string, maxTokens: number): number[] {
  // English averages about 4 characters a token; 8 leaves room for numbers and punctuation.
  for (let charBudget = Math.max(64, maxTokens * 8); charBudget < text.length; charBudget *= 2) {
    const cut = pieceBoundaryAtOrAfter(text, charBudget);
    if (cut < 0) break;
    const ids = encode(text.slice(0, cut));
    if (ids.length >= maxTokens) return ids.slice(0, maxTokens);
  }
  return encode(text).slice(0, maxTokens);
}

function pieceBoundaryAtOrAfter(text: string, from: number): number {
  for (let i = Math.max(1, from); i < text.length - 1; i++) {
    if (text.charCodeAt(i) === 0x20 && isAsciiLetter(text.charCodeAt(i - 1)) && isAsciiLetter(text.charCodeAt(i + 1))) return i;
  }
  return -1;
}

function isAsciiLetter(code: number): boolean {
  return (code >= 0x41 && code <= 0x5a) || (code >= 0x61 && code <= 0x7a);
}

export function decode(ids: ArrayLike<number>): string {
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i];
    if (!Number.isInteger(id) || id < 0 || id >= GPT2_VOCAB_SIZE) {
      throw new RangeError(`decode: token id ${id} at position ${i} is outside the GPT-2 vocabulary [0, ${GPT2_VOCAB_SIZE})`);
    }
  }
  return getEncoder().decode(Array.from(ids));
}

/**
 * Implements: the counter-based random numbers behind deterministic initialization and dropout.
 *
 * Why counter-based: element i of a stream is a pure function of (key, i), so a pipeline stage or a
 * tensor-parallel shard can generate exactly its slice of a parameter, and that slice equals the same
 * slice of the full tensor generated on one process. Nothing is sequential, nothing depends on how many
 * numbers were drawn before. The mixer is the 32-bit MurmurHash3 finalizer applied twice around the
 * key; good enough statistically for weights and dropout, and fast in JS (Math.imul only).
 */

/** MurmurHash3's fmix32: a bijective avalanche mixer on 32-bit words. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** FNV-1a over the UTF-16 code units of a string, then mixed: turns a name into a stream key. */
export function hashString(text: string, seed = 0): number {
  let h = (0x811c9dc5 ^ fmix32(seed >>> 0)) >>> 0;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return fmix32(h);
}

/** Combines several integers (seed, step, sample, layer, …) into one stream key. */
export function combineKey(...parts: number[]): number {
  let h = 0x9e3779b9;
  for (const part of parts) {
    // Integers beyond 32 bits (sample indices of huge datasets) keep their high word.
    const low = part >>> 0;
    const high = Math.floor(part / 0x100000000) >>> 0;
    h = fmix32((h ^ low) + 0x7f4a7c15);
    h = fmix32((h ^ high) + 0x7f4a7c15);
  }
  return h;
}

/** The 32-bit word at `counter` of the stream `key`. counter must be an integer below 2^32. */
export function randomWord(key: number, counter: number): number {
  return fmix32(fmix32((counter ^ key) >>> 0) ^ Math.imul(key, 0x27d4eb2f)) >>> 0;
}

const TWO_POW_32 = 4294967296;

/** Uniform in the open interval (0, 1). */
export function uniformAt(key: number, counter: number): number {
  return (randomWord(key, counter) + 0.5) / TWO_POW_32;
}

/** A second stream derived from a key, so Box-Muller can take two words at the same counter. */
const SECOND_STREAM = 0x5bd1e995;

/**
 * Standard normal number for element `index` (< 2^32), by Box-Muller over the words at `index` of the
 * stream and of its second stream. Only the cosine half is used, so element i depends on nothing but
 * (key, i).
 */
export function normalAt(key: number, index: number): number {
  const u1 = uniformAt(key, index);
  const u2 = uniformAt((key ^ SECOND_STREAM) >>> 0, index);
  return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
}

/**
 * Implements: the seeded data shuffle. A xoshiro128** generator (Blackman and Vigna), seeded through splitmix32
 * from (seed, epoch), drives a Fisher-Yates shuffle. Only 32-bit integer operations (Math.imul, shifts) are
 * used, so every machine and every Node version produces the same permutation for the same (seed, epoch).
 * Epochs get independent streams: epoch e's order depends on (seed, e) only, never on earlier epochs, so a
 * resumed run can jump straight to any epoch.
 */

/** splitmix32-style finalizer: a bijective 32-bit mix, used to spread seed words into generator state. */
function mix32(x: number): number {
  x = (x + 0x9e3779b9) | 0;
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

export class Xoshiro128 {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  /** `key` words are 32-bit unsigned integers (e.g. seed halves and the epoch). */
  constructor(...key: number[]) {
    let h = 0x2545f491;
    for (const word of key) h = mix32(h ^ mix32(word >>> 0));
    this.s0 = h = mix32(h);
    this.s1 = h = mix32(h);
    this.s2 = h = mix32(h);
    this.s3 = h = mix32(h);
    // The all-zero state is xoshiro's only fixed point.
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
  }

  /** A generator with this exact state, for checking against the reference implementation's test vectors. */
  static fromState(s0: number, s1: number, s2: number, s3: number): Xoshiro128 {
    const rng = new Xoshiro128();
    rng.s0 = s0 | 0;
    rng.s1 = s1 | 0;
    rng.s2 = s2 | 0;
    rng.s3 = s3 | 0;
    return rng;
  }

  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** Uniform integer in [0, bound), without modulo bias (rejection sampling). */
  nextBelow(bound: number): number {
    if (!Number.isInteger(bound) || bound < 1 || bound > 0x100000000) throw new RangeError(`nextBelow: bound ${bound} must be an integer in [1, 2^32]`);
    const limit = 0x100000000 - (0x100000000 % bound);
    for (;;) {
      const x = this.nextUint32();
      if (x < limit) return x % bound;
    }
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** Splits a non-negative safe integer seed into two 32-bit words so seeds above 2^32 stay distinct. */
export function seedWords(seed: number): [number, number] {
  if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError(`seed must be a non-negative safe integer, got ${seed}`);
  return [seed >>> 0, Math.floor(seed / 0x100000000) >>> 0];
}

/** The order of samples in `epoch`: a permutation of [0, n). */
export function epochPermutation(n: number, seed: number, epoch: number): Int32Array {
  if (!Number.isInteger(epoch) || epoch < 0 || epoch > 0xffffffff) throw new RangeError(`epoch must be an integer in [0, 2^32), got ${epoch}`);
  const order = new Int32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  const rng = new Xoshiro128(...seedWords(seed), epoch);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.nextBelow(i + 1);
    const swap = order[i];
    order[i] = order[j];
    order[j] = swap;
  }
  return order;
}

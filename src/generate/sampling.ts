/**
 * Implements: choosing the next token from the logits, as Hugging Face's generate and nanoGPT's sample
 * do: greedy (the most likely token) at temperature 0; else softmax(logits / temperature) restricted to
 * the top-k tokens and then to the smallest set whose probability reaches top-p (nucleus sampling),
 * drawn with a uniform number the caller supplies (seeded: the same seed gives the same text).
 */
export interface SamplingOptions {
  /** 0: greedy. */
  temperature: number;
  /** Keep the k most likely tokens; undefined: all. */
  topK?: number;
  /** Keep the most likely tokens whose probabilities add up to p, in (0, 1]; undefined: all. */
  topP?: number;
}

/**
 * The next token among ids [0, allowed) of `logits` (the model's vocabulary is padded past the
 * tokenizer's: the padding ids are never chosen). `uniform` is in [0, 1).
 */
export function pickToken(logits: Float32Array, allowed: number, options: SamplingOptions, uniform: number): number {
  if (!(allowed >= 1 && allowed <= logits.length)) throw new Error(`pickToken: ${allowed} allowed ids for ${logits.length} logits`);
  if (options.temperature === 0) {
    let best = 0;
    for (let id = 1; id < allowed; id++) if (logits[id]! > logits[best]!) best = id;
    return best;
  }
  const ids = Array.from({ length: allowed }, (_, id) => id).sort((a, b) => logits[b]! - logits[a]! || a - b);
  const kept = options.topK === undefined ? ids : ids.slice(0, Math.max(1, options.topK));
  // Softmax in float64 over the kept tokens, from the largest logit down.
  const top = logits[kept[0]!]! / options.temperature;
  const weights = kept.map((id) => Math.exp(logits[id]! / options.temperature - top));
  const total = weights.reduce((a, b) => a + b, 0);
  let count = kept.length;
  if (options.topP !== undefined) {
    // The smallest prefix whose probability reaches p (at least one token).
    let mass = 0;
    for (count = 0; count < kept.length && (count === 0 || mass < options.topP * total); count++) mass += weights[count]!;
  }
  const mass = weights.slice(0, count).reduce((a, b) => a + b, 0);
  let target = uniform * mass;
  for (let i = 0; i < count; i++) {
    target -= weights[i]!;
    if (target < 0) return kept[i]!;
  }
  return kept[count - 1]!;
}

/** Problems with sampling options, for the command line. */
export function samplingProblems(options: SamplingOptions): string[] {
  const problems: string[] = [];
  if (!(Number.isFinite(options.temperature) && options.temperature >= 0)) problems.push(`--temperature must be a number >= 0 (0: greedy), got ${options.temperature}`);
  if (options.topK !== undefined && !(Number.isInteger(options.topK) && options.topK >= 1)) problems.push(`--top-k must be a positive integer, got ${options.topK}`);
  if (options.topP !== undefined && !(options.topP > 0 && options.topP <= 1)) problems.push(`--top-p must be in (0, 1], got ${options.topP}`);
  return problems;
}

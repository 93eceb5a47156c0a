/**
 * Implements: "did you mean …?" for misspelled config keys and CLI options.
 * Distance is optimal string alignment (Levenshtein plus adjacent transposition), so the usual typos,
 * a swapped pair (`nmuLayers`), a dropped or doubled letter, cost 1.
 */

export function editDistance(a: string, b: string): number {
  // rows[i][j] = distance between a[0..i) and b[0..j); three rows suffice for transpositions.
  let beforePrevious: number[] = [];
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + substitution);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        best = Math.min(best, beforePrevious[j - 2]! + 1);
      }
      current.push(best);
    }
    beforePrevious = previous;
    previous = current;
  }
  return previous[b.length]!;
}

/** Case, `_` and `-` do not matter when matching: `num_layers` and `NUMLAYERS` both mean `numLayers`. */
function normalize(word: string): string {
  return word.toLowerCase().replace(/[_-]/g, '');
}

/**
 * The candidate the user most likely meant, or undefined when none is close.
 * Close means: equal after normalization, or within an edit distance of about a third of its length
 * (at least 1, at most 3), so short keys only match near-identical ones.
 */
export function closestMatch(word: string, candidates: Iterable<string>): string | undefined {
  const normalizedWord = normalize(word);
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of candidates) {
    if (normalize(candidate) === normalizedWord) return candidate;
    const distance = editDistance(normalizedWord, normalize(candidate));
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  const allowed = Math.min(3, Math.max(1, Math.floor(normalizedWord.length / 3)));
  return bestDistance <= allowed ? best : undefined;
}

/**
 * Implements: metrics.jsonl kept consistent with the checkpoint a run continues from: lines of steps after
 * it belong to a branch of the run that is about to be trained again, so they go; the rest stays and the
 * resumed steps are appended after it.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';

/** Keeps the lines of `path` whose step is at most `lastStep`; a missing file stays missing. */
export function keepMetricsThrough(path: string, lastStep: number): void {
  if (!existsSync(path)) return;
  const lines = readFileSync(path, 'utf8').split('\n').filter((line) => line.trim() !== '');
  const kept = lines.filter((line) => (JSON.parse(line) as { step: number }).step <= lastStep);
  if (kept.length !== lines.length) writeFileSync(path, kept.map((line) => `${line}\n`).join(''));
}

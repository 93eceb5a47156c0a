/**
 * Implements: a run's curves read from its `metrics.jsonl`: loss, lr and grad norm per step, and the
 * validation loss of the evaluation lines (a line with `val_loss` and no `loss`, log-by-step.ts), with
 * the run's label for a legend.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';

/** One point of a curve; y is null where the run logged a non-finite value (JSON writes NaN as null). */
export interface CurvePoint {
  x: number;
  y: number | null;
}

export interface RunMetrics {
  /** The folder as given on the command line. */
  dir: string;
  label: string;
  loss: CurvePoint[];
  lr: CurvePoint[];
  gradNorm: CurvePoint[];
  validationLoss: CurvePoint[];
  /** Step lines read (validation lines not counted). */
  steps: number;
}

export const METRICS_FILE = 'metrics.jsonl';

/**
 * Reads each run and labels it by its folder's name, or by the path as given where two names clash
 * (runs/a/tiny against runs/b/tiny). A run may also be named by its metrics.jsonl.
 */
export function readRuns(dirs: readonly string[]): RunMetrics[] {
  const runs = dirs.map((dir) => readRunMetrics(dir));
  const counts = new Map<string, number>();
  for (const run of runs) counts.set(run.label, (counts.get(run.label) ?? 0) + 1);
  return runs.map((run) => (counts.get(run.label)! > 1 ? { ...run, label: run.dir } : run));
}

export function readRunMetrics(dir: string): RunMetrics {
  if (!existsSync(dir)) throw new Error(`no run folder ${dir}: give the --out folder of a \`gpt-hybrid train\` run`);
  const isFile = statSync(dir).isFile();
  const file = isFile ? dir : join(dir, METRICS_FILE);
  if (!existsSync(file)) throw new Error(`no ${METRICS_FILE} in ${dir}: is it a run folder made by \`gpt-hybrid train --out\`?`);
  const run: RunMetrics = { dir, label: basename(resolve(isFile ? dirname(dir) : dir)), loss: [], lr: [], gradNorm: [], validationLoss: [], steps: 0 };
  const lines = readFileSync(file, 'utf8').split('\n');
  // Only the last line may be cut short (a running job is appending it); one further up is damage.
  const last = lines.findLastIndex((line) => line.trim() !== '');
  for (let i = 0; i <= last; i++) {
    const line = lines[i]!;
    if (line.trim() === '') continue;
    const record = parseRecord(line);
    if (record === undefined) {
      if (i === last) break;
      throw new Error(`${file}:${i + 1}: not a metrics line (JSON with a numeric "step"); remove or fix that line`);
    }
    if (record.loss === undefined && record.val_loss !== undefined) {
      run.validationLoss.push({ x: record.step, y: finiteOrNull(record.val_loss) });
      continue;
    }
    run.steps++;
    run.loss.push({ x: record.step, y: finiteOrNull(record.loss) });
    if (record.lr !== undefined) run.lr.push({ x: record.step, y: finiteOrNull(record.lr) });
    if (record.grad_norm !== undefined) run.gradNorm.push({ x: record.step, y: finiteOrNull(record.grad_norm) });
  }
  if (run.steps === 0 && run.validationLoss.length === 0) {
    throw new Error(`${file} has no complete step line yet: is the run in ${dir} still before its first step? Plot it again once it has logged one`);
  }
  return run;
}

interface MetricsRecord {
  step: number;
  loss?: unknown;
  lr?: unknown;
  grad_norm?: unknown;
  val_loss?: unknown;
}

function parseRecord(line: string): MetricsRecord | undefined {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null || typeof (value as { step?: unknown }).step !== 'number') return undefined;
  return value as MetricsRecord;
}

function finiteOrNull(value: unknown): number | null {
  return typeof value === 'number' && Number.isFinite(value) ? value : null;
}

/**
 * Implements: the bench's figures with their targets: whether each is met, the table a person reads and
 * the one JSON object a script reads (every figure at the top level, `targets` with the flags, `details`
 * with the numbers behind them).
 */

export interface Target {
  op: '>=' | '<=' | '==';
  value: number;
}

export interface Figure {
  key: string;
  /** null when the measurement failed (`note` says why). */
  value: number | null;
  target?: Target;
  /** What the figure is, or why it is missing. */
  note?: string;
}

export interface TargetResult extends Target {
  met: boolean;
}

export function targetMet(value: number | null, target: Target): boolean {
  if (value === null || !Number.isFinite(value)) return false;
  if (target.op === '>=') return value >= target.value;
  if (target.op === '<=') return value <= target.value;
  return value === target.value;
}

/** The JSON object: figures by key, then `targets` (only figures that have one) and `details`. */
export function reportJson(figures: readonly Figure[], details: Record<string, unknown>): Record<string, unknown> {
  const json: Record<string, unknown> = {};
  const targets: Record<string, TargetResult> = {};
  for (const figure of figures) {
    json[figure.key] = figure.value;
    if (figure.target !== undefined) targets[figure.key] = { ...figure.target, met: targetMet(figure.value, figure.target) };
  }
  const all = Object.values(targets);
  return { ...json, targets, targets_met: all.filter((t) => t.met).length, targets_total: all.length, details };
}

export function reportTable(figures: readonly Figure[]): string {
  const rows = figures.map((figure) => [
    figure.key,
    figure.value === null ? 'failed' : String(figure.value),
    figure.target === undefined ? '' : `${figure.target.op} ${figure.target.value}`,
    figure.target === undefined ? '' : targetMet(figure.value, figure.target) ? 'met' : 'NOT met',
    figure.note ?? '',
  ]);
  const header = ['figure', 'value', 'target', '', 'what'];
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => row[column].length)));
  const line = (cells: string[]) => cells.map((cell, column) => (column === cells.length - 1 ? cell : cell.padEnd(widths[column]))).join('  ').trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

export function round(value: number, digits = 3): number {
  return Math.round(value * 10 ** digits) / 10 ** digits;
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

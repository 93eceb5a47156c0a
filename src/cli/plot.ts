/**
 * Implements: `gpt-hybrid plot`: the runs' metrics (plot/run-metrics.ts) drawn as one image
 * (plot/metrics-charts.ts) and written to --out, saying what it drew of each run.
 */
import { writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { drawMetricsCharts } from '../plot/metrics-charts.ts';
import { readRuns } from '../plot/run-metrics.ts';
import type { PlotCommand } from './plot-args.ts';

export function runPlot(command: PlotCommand, out: (text: string) => void = (text) => process.stdout.write(text)): number {
  const runs = readRuns(command.runs);
  const image = drawMetricsCharts(runs, command.format);
  const path = resolve(command.out);
  try {
    writeFileSync(path, image);
  } catch (error) {
    throw new Error(`cannot write the plot to ${path}: ${(error as Error).message}; check that the folder exists and is writable`);
  }
  out(`wrote ${path}\n`);
  for (const run of runs) {
    const validation = run.validationLoss.length === 0 ? '' : `, ${run.validationLoss.length} validation${run.validationLoss.length === 1 ? '' : 's'}`;
    const span = run.loss.length === 0 ? '' : ` (steps ${run.loss[0]!.x}-${run.loss.at(-1)!.x})`;
    out(`  ${run.label}: ${run.steps} step${run.steps === 1 ? '' : 's'}${span}${validation}\n`);
  }
  return 0;
}

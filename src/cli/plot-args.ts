/**
 * Implements: the `plot` command line: its options and help, and `PlotCommand`. plot.ts runs it.
 * Apart from plot.ts so that parsing and help load none of its dependencies (Chart.js, the canvas).
 */
import { extname } from 'node:path';
import type { PlotFormat } from '../plot/metrics-charts.ts';
import { PROGRAM, UsageError, type CommandSpec, type ParsedValues } from './command-spec.ts';

export interface PlotCommand {
  command: 'plot';
  /** Run folders (or their metrics.jsonl files), one curve each, in the order given. */
  runs: string[];
  out: string;
  /** From the extension of `out`. */
  format: PlotFormat;
}

const FORMATS: Record<string, PlotFormat> = { '.png': 'png', '.svg': 'svg' };

export const PLOT_SPEC: CommandSpec<PlotCommand> = {
  summary: 'draw the loss, validation loss, lr and grad norm of one or several runs as PNG or SVG',
  usage: 'RUN... --out FILE.png|FILE.svg',
  description:
    "Reads each run folder's metrics.jsonl (as `train --out` writes it; a run still going is read up\n" +
    'to its last complete line) and draws three panels against step: loss (validation loss dashed,\n' +
    'when the run evaluated), lr and grad norm, one colour per run, labelled by the folder\'s name (by\n' +
    'its path where two names are the same). The extension of --out picks the format.',
  options: {
    out: { type: 'string', short: 'o', placeholder: 'FILE', doc: 'the image to write: FILE.png or FILE.svg' },
  },
  examples: [`${PROGRAM} plot runs/tiny --out runs/tiny/metrics.png`, `${PROGRAM} plot runs/dp2 runs/pp2 --out compare.svg`],
  build: buildPlot,
};

function buildPlot(values: ParsedValues, positionals: string[], usage: string): PlotCommand {
  if (positionals.length === 0) throw new UsageError('plot needs at least one run folder', usage);
  const empty = positionals.findIndex((run) => run === '');
  if (empty >= 0) throw new UsageError(`run folder ${empty + 1} is an empty string`, usage);
  const out = values.out as string | undefined;
  if (out === undefined || out === '') throw new UsageError('plot needs --out FILE.png or --out FILE.svg, the image to write', usage);
  const extension = extname(out).toLowerCase();
  const format = FORMATS[extension];
  if (format === undefined) {
    throw new UsageError(`--out ${out}: ${extension === '' ? 'no extension' : `unknown extension ${extension}`}; the image is written as ${Object.keys(FORMATS).join(' or ')}`, usage);
  }
  return { command: 'plot', runs: positionals, out, format };
}

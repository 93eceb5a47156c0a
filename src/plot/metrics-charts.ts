/**
 * Implements: the plot of one or several runs' metrics, drawn by Chart.js on @napi-rs/canvas: three
 * panels stacked on one page, loss (validation loss dashed, with points), lr and grad norm against
 * step, one colour per run, encoded as PNG or as one SVG document (text as paths, so it looks the same
 * without the fonts it was drawn with).
 */
import { createCanvas, SvgExportFlag, type SKRSContext2D } from '@napi-rs/canvas';
import { Chart, Legend, LinearScale, LineController, LineElement, PointElement, Title, type ChartDataset } from 'chart.js';
import { canvasBand } from './canvas-band.ts';
import type { CurvePoint, RunMetrics } from './run-metrics.ts';

Chart.register(LineController, LineElement, PointElement, LinearScale, Title, Legend);

export type PlotFormat = 'png' | 'svg';

export const PANEL_WIDTH = 900;
export const PANEL_HEIGHT = 320;
export const PANEL_COUNT = 3;
const BACKGROUND = '#ffffff';

/** Tableau 10, the palette of most plotting tools: run i gets colour i (mod 10). */
export const RUN_COLORS = ['#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#bab0ac'] as const;

interface Panel {
  title: string;
  yLabel: string;
  datasets: ChartDataset<'line', CurvePoint[]>[];
}

/** The page as PNG bytes or SVG markup; panels from the top: loss, lr, grad norm. */
export function drawMetricsCharts(runs: readonly RunMetrics[], format: PlotFormat): Buffer {
  const width = PANEL_WIDTH;
  const height = PANEL_HEIGHT * PANEL_COUNT;
  const panels = metricPanels(runs);
  if (format === 'svg') {
    const canvas = createCanvas(width, height, SvgExportFlag.ConvertTextToPaths);
    drawPanels(canvas.getContext('2d'), panels);
    return canvas.getContent();
  }
  const canvas = createCanvas(width, height);
  drawPanels(canvas.getContext('2d'), panels);
  return canvas.toBuffer('image/png');
}

function metricPanels(runs: readonly RunMetrics[]): Panel[] {
  const line = (run: RunMetrics, index: number, data: CurvePoint[]): ChartDataset<'line', CurvePoint[]> => ({
    label: run.label,
    data,
    borderColor: colorOf(index),
    backgroundColor: colorOf(index),
    borderWidth: 2,
    // Thousands of steps: points would hide the line; a run of a few steps still needs to be seen.
    pointRadius: data.length <= 30 ? 2 : 0,
  });
  const validation = runs.flatMap((run, index) =>
    run.validationLoss.length === 0
      ? []
      : [{ ...line(run, index, run.validationLoss), label: `${run.label} (validation)`, borderDash: [6, 4], pointRadius: 3 }],
  );
  return [
    { title: validation.length === 0 ? 'Loss' : 'Loss (validation dashed)', yLabel: 'loss', datasets: [...runs.map((run, i) => line(run, i, run.loss)), ...validation] },
    { title: 'Learning rate', yLabel: 'lr', datasets: runs.map((run, i) => line(run, i, run.lr)) },
    { title: 'Gradient norm', yLabel: 'grad norm', datasets: runs.map((run, i) => line(run, i, run.gradNorm)) },
  ];
}

function colorOf(index: number): string {
  return RUN_COLORS[index % RUN_COLORS.length]!;
}

function drawPanels(context: SKRSContext2D, panels: readonly Panel[]): void {
  context.fillStyle = BACKGROUND;
  context.fillRect(0, 0, PANEL_WIDTH, PANEL_HEIGHT * panels.length);
  panels.forEach((panel, index) => {
    const top = index * PANEL_HEIGHT;
    context.save();
    // A chart's legend or ticks never spill into the panel below.
    context.beginPath();
    context.rect(0, top, PANEL_WIDTH, PANEL_HEIGHT);
    context.clip();
    const chart = new Chart(canvasBand(context, top, PANEL_WIDTH, PANEL_HEIGHT) as unknown as HTMLCanvasElement, {
      type: 'line',
      data: { datasets: panel.datasets },
      options: {
        responsive: false,
        animation: false,
        devicePixelRatio: 1,
        parsing: false,
        layout: { padding: { left: 8, right: 16, top: 4, bottom: 4 } },
        plugins: {
          title: { display: true, text: panel.title, font: { size: 15, weight: 'bold' } },
          legend: { position: 'top', labels: { boxHeight: 2 } },
        },
        scales: {
          x: { type: 'linear', title: { display: true, text: 'step' } },
          y: { type: 'linear', title: { display: true, text: panel.yLabel } },
        },
      },
    });
    chart.destroy();
    context.restore();
  });
}

// Tests: `gpt-hybrid plot` (src/cli/plot.ts, plot-args.ts, src/plot/): images of fake run folders,
// checked by their bytes and their pixels; the errors for a folder that is no run and a bad extension.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCanvas, loadImage } from '@napi-rs/canvas';
import { parseCommandLine } from '../../src/cli/args.ts';
import { runPlot } from '../../src/cli/plot.ts';
import type { PlotCommand } from '../../src/cli/plot-args.ts';
import { PANEL_COUNT, PANEL_HEIGHT, PANEL_WIDTH, RUN_COLORS } from '../../src/plot/metrics-charts.ts';
import { runCli } from '../support/cli.ts';

const root = mkdtempSync(join(tmpdir(), 'gpt-hybrid-plot-'));
after(() => rmSync(root, { recursive: true, force: true }));

/** A run folder as `train --out` leaves it: step lines as log-by-step.ts writes them, evaluations every 10 steps. */
function writeRun(name: string, options: { steps: number; lr: number; decay: number; validation: boolean; tail?: string }): string {
  const dir = join(root, name);
  mkdirSync(dir, { recursive: true });
  const lines: string[] = [];
  for (let step = 1; step <= options.steps; step++) {
    const loss = 3 + 8 * Math.exp(-step / options.decay) + 0.05 * Math.sin(step);
    const lr = options.lr * Math.min(1, step / 10) * 0.5 * (1 + Math.cos((Math.PI * step) / options.steps));
    const record = {
      step, time: new Date(Date.UTC(2026, 11, 6, 0, 0, step)).toISOString(), consumed_samples: step * 8, epoch: 0, loss, tokens: 256, samples: 8,
      step_ms: 100, elapsed_ms: 100 * step, tokens_per_s: 2560, model_gflops: 1.2, lr, grad_norm: 0.3 + 3 * Math.exp(-step / options.decay), skipped_steps: 0, nan_steps: 0, rss_mb: 300,
    };
    lines.push(JSON.stringify(record));
    if (options.validation && step % 10 === 0) lines.push(JSON.stringify({ step, val_loss: loss + 0.2, val_ppl: Math.exp(loss + 0.2), val_samples: 32, val_ms: 40 }));
  }
  writeFileSync(join(dir, 'metrics.jsonl'), `${lines.join('\n')}\n${options.tail ?? ''}`);
  return dir;
}

// A, still running (its last line half written), evaluates; B is another run that does not.
const runA = writeRun('run-a', { steps: 60, lr: 3e-3, decay: 12, validation: true, tail: '{"step":61,"time":"2026-12-06T00:01:01.000Z","lo' });
const runB = writeRun('run-b', { steps: 40, lr: 1e-3, decay: 30, validation: false });

/**
 * Runs the command in this process as the CLI would (its parser, then the command), with what it
 * prints; the exit codes of failures are main's, tested through bin/gpt-hybrid.js.
 */
function plot(argv: string[]): { code: number; output: string } {
  const command = parseCommandLine(['plot', ...argv]);
  assert.equal(command.command, 'plot');
  let output = '';
  const code = runPlot(command as PlotCommand, (text) => (output += text));
  return { code, output };
}

function plotFile(runs: string[], file: string): Buffer {
  const out = join(root, file);
  const result = plot([...runs, '--out', out]);
  assert.equal(result.code, 0, result.output);
  assert.ok(result.output.startsWith(`wrote ${out}\n`), result.output);
  return readFileSync(out);
}

/** Pixels within 40 (summed over R, G, B) of `color` in each panel's band. */
async function colorCountsPerPanel(png: Buffer, color: string): Promise<number[]> {
  const image = await loadImage(png);
  // The image's width is a native getter: read once, not per pixel.
  const { width, height } = image;
  const canvas = createCanvas(width, height);
  const context = canvas.getContext('2d');
  context.drawImage(image, 0, 0);
  const { data } = context.getImageData(0, 0, width, height);
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(color.slice(i, i + 2), 16)) as [number, number, number];
  const counts: number[] = [];
  for (let panel = 0; panel < PANEL_COUNT; panel++) {
    let count = 0;
    for (let y = panel * PANEL_HEIGHT; y < (panel + 1) * PANEL_HEIGHT; y++) {
      for (let x = 0; x < width; x++) {
        const i = (y * width + x) * 4;
        if (Math.abs(data[i]! - r) + Math.abs(data[i + 1]! - g) + Math.abs(data[i + 2]! - b) <= 40) count++;
      }
    }
    counts.push(count);
  }
  return counts;
}

// The legend's swatch alone is about 40 x 2 pixels; a curve across the panel is many times that.
const CURVE_PIXELS = 400;

test('plot - PNG of one run, of another, of both: the size of three panels, different images, each run\'s curve in every panel', async () => {
  const a = plotFile([runA], 'a.png');
  const b = plotFile([runB], 'b.png');
  const both = plotFile([runA, runB], 'both.png');
  for (const png of [a, b, both]) {
    assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 'PNG signature');
    assert.equal(png.subarray(12, 16).toString('latin1'), 'IHDR');
    assert.deepEqual([png.readUInt32BE(16), png.readUInt32BE(20)], [PANEL_WIDTH, PANEL_HEIGHT * PANEL_COUNT]);
  }
  assert.ok(!a.equals(b), 'run A and run B drew the same image');
  assert.ok(!both.equals(a) && !both.equals(b), 'the two-run plot equals a one-run plot');

  const [first, second] = RUN_COLORS;
  for (const count of await colorCountsPerPanel(a, first)) assert.ok(count > CURVE_PIXELS, `run A's curve missing from a panel: ${count} pixels`);
  // A one-run plot has no second colour: the threshold counts curves, not stray pixels.
  for (const count of await colorCountsPerPanel(a, second)) assert.ok(count < CURVE_PIXELS / 4, `second colour in run A's plot: ${count} pixels`);
  for (const color of [first, second]) {
    for (const count of await colorCountsPerPanel(both, color)) assert.ok(count > CURVE_PIXELS, `${color} curve missing from a panel of the two-run plot: ${count} pixels`);
  }
});

test('plot - says what it drew of each run: the half-written last line skipped, validations counted', () => {
  const result = plot([runA, runB, '--out', join(root, 'report.png')]);
  assert.equal(result.code, 0, result.output);
  assert.match(result.output, /^ {2}run-a: 60 steps \(steps 1-60\), 6 validations$/m);
  assert.match(result.output, /^ {2}run-b: 40 steps \(steps 1-40\)$/m);
});

test('plot - two runs of the same folder name are told apart by their paths', () => {
  const x = writeRun('x/tiny', { steps: 5, lr: 1e-3, decay: 5, validation: false });
  const y = writeRun('y/tiny', { steps: 5, lr: 2e-3, decay: 9, validation: false });
  const result = plot([x, y, '--out', join(root, 'clash.png')]);
  assert.equal(result.code, 0, result.output);
  assert.ok(result.output.includes(`  ${x}: 5 steps`) && result.output.includes(`  ${y}: 5 steps`), result.output);
});

test('plot - SVG: one document of paths (text drawn as paths)', () => {
  const svg = plotFile([runA, runB], 'both.svg').toString('utf8');
  assert.ok(svg.startsWith('<?xml') || svg.startsWith('<svg'), svg.slice(0, 100));
  assert.match(svg, new RegExp(`<svg[^>]* width="${PANEL_WIDTH}" height="${PANEL_HEIGHT * PANEL_COUNT}"`));
  assert.ok((svg.match(/<path /g) ?? []).length > 50, 'few <path> elements');
  assert.equal(svg.match(/<svg/g)?.length, 1, 'panels pasted as separate documents');
  for (const color of RUN_COLORS.slice(0, 2)) assert.match(svg, new RegExp(`stroke="${color}"`, 'i'), `no curve in ${color}`);
});

test('plot - a damaged line above the last is an error naming the file and line', () => {
  const damaged = join(root, 'damaged');
  mkdirSync(damaged);
  writeFileSync(join(damaged, 'metrics.jsonl'), '{"step":1,"loss":5,"lr":0.001,"grad_norm":1}\n{"step":2,"lo\n{"step":3,"loss":4,"lr":0.001,"grad_norm":1}\n');
  assert.throws(() => plot([damaged, '--out', join(root, 'y.png')]), /damaged\/metrics\.jsonl:2: not a metrics line/);
});

test('plot - through bin/gpt-hybrid.js: a folder without metrics.jsonl exits 1 naming it and what to do; a bad extension exits 2', async () => {
  const empty = join(root, 'not-a-run');
  mkdirSync(empty);
  const [missing, extension] = await Promise.all([
    runCli(['plot', runA, empty, '--out', join(root, 'x.png')]),
    runCli(['plot', runA, '--out', join(root, 'a.jpg')]),
  ]);
  assert.equal(missing.code, 1, missing.output);
  assert.ok(missing.output.includes(`no metrics.jsonl in ${empty}: is it a run folder made by \`gpt-hybrid train --out\`?`), missing.output);
  assert.equal(extension.code, 2, extension.output);
  assert.match(extension.output, /--out .*a\.jpg: unknown extension \.jpg; the image is written as \.png or \.svg/);
  assert.match(extension.output, /usage: gpt-hybrid plot RUN\.\.\. --out FILE\.png\|FILE\.svg/);
});

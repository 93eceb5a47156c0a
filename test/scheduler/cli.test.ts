// Tests: the `gpt-hybrid schedule` command: parsing and its UsageErrors, the printed chart, --json,
// --svg, and one run of the real CLI process (the dispatcher's wiring and exit codes).
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { parseCommandLine } from '../../src/cli/args.ts';
import { UsageError } from '../../src/cli/command-spec.ts';
import type { ScheduleCommand } from '../../src/cli/schedule-args.ts';
import { runSchedule } from '../../src/cli/schedule.ts';
import { buildInterleaved, buildZeroBubbleH1, scheduleToJson } from '../../src/scheduler/schedules.ts';
import { runCli } from '../support/cli.ts';

function parseSchedule(argv: string[]): ScheduleCommand {
  const command = parseCommandLine(['schedule', ...argv]);
  assert.equal(command.command, 'schedule');
  return command as ScheduleCommand;
}

function assertUsage(argv: string[], pattern: RegExp): void {
  assert.throws(
    () => parseCommandLine(['schedule', ...argv]),
    (error: unknown) => error instanceof UsageError && pattern.test(error.message) && /usage: gpt-hybrid schedule --kind/.test(error.message),
    argv.join(' '),
  );
}

function capture(command: ScheduleCommand): { out: string; err: string; code: number } {
  let out = '';
  let err = '';
  const code = runSchedule(command, (text) => (out += text), (text) => (err += text));
  return { out, err, code };
}

test('schedule args - options become a typed command; chunks default to 1', () => {
  assert.deepEqual(parseSchedule(['--kind', '1f1b', '--stages', '4', '--microbatches', '8']), { command: 'schedule', kind: '1f1b', stages: 4, microBatches: 8, chunks: 1, json: false });
  assert.deepEqual(parseSchedule(['--kind=interleaved', '--stages=2', '--microbatches=4', '--chunks=2', '--json', '--svg', 'x.svg']), {
    command: 'schedule',
    kind: 'interleaved',
    stages: 2,
    microBatches: 4,
    chunks: 2,
    json: true,
    svg: 'x.svg',
  });
});

test('schedule args - bad input is a UsageError that says what is wrong', () => {
  assertUsage(['--kind', 'interleaved', '--stages', '4', '--microbatches', '6', '--chunks', '2'], /6 micro-batches over 4 stages leaves 2 over; use 4 or 8 micro-batches/);
  assertUsage(['--kind', 'gpipe', '--stages', '0', '--microbatches', '4'], /--stages must be a positive integer, got "0"/);
  assertUsage(['--kind', 'gpipe', '--stages', '2', '--microbatches', 'four'], /--microbatches must be a positive integer, got "four"/);
  assertUsage(['--kind', '1fb1', '--stages', '2', '--microbatches', '4'], /unknown schedule kind "1fb1"; did you mean "1f1b"\?/);
  assertUsage(['--stages', '2', '--microbatches', '4'], /schedule needs --kind gpipe\|1f1b\|interleaved/);
  assertUsage(['--kind', 'gpipe', '--microbatches', '4'], /schedule needs --stages P/);
  assertUsage(['--kind', 'gpipe', '--stages', '2'], /schedule needs --microbatches M/);
  assertUsage(['--kind', '1f1b', '--stages', '2', '--microbatches', '4', '--chunks', '2'], /1f1b schedule runs one model chunk per stage, got chunks = 2/);
  assertUsage(['--kind', 'gpipe', '--stages', '2', '--microbatches', '4', 'extra'], /unexpected argument "extra"/);
});

test('schedule - the chart shows stages as rows, idle slots, bubbles and the theory', () => {
  const { out, code } = capture(parseSchedule(['--kind', '1f1b', '--stages', '2', '--microbatches', '3']));
  assert.equal(code, 0);
  assert.match(out, /^1f1b schedule: 2 stages, 3 micro-batches, 1 chunk per stage\n/);
  assert.match(out, /\nstage 0 {2}F0 F1 \. {2}B0 F2 B1 \. {2}B2\n/);
  assert.match(out, /\nstage 1 {2}\. {2}F0 B0 F1 B1 F2 B2 \.\n/);
  assert.match(out, /bubble \(idle \/ total time\): stage 0 0\.250, stage 1 0\.250/);
  assert.match(out, /theoretical bubble: 0\.250/);
});

test('schedule --json - prints exactly the issue\'s object', () => {
  const { out, err } = capture(parseSchedule(['--kind', 'interleaved', '--stages', '2', '--microbatches', '4', '--chunks', '2', '--json']));
  assert.equal(err, '');
  const parsed = JSON.parse(out) as unknown;
  assert.deepEqual(parsed, scheduleToJson(buildInterleaved(2, 4, 2)));
  assert.deepEqual((parsed as { ops: unknown[][] }).ops[0]!.slice(0, 3), [['F', 0, 0], ['F', 1, 0], ['F', 0, 1]]);
});

test('schedule --svg - writes a timeline with one box per op, two colours, and says where', () => {
  const folder = mkdtempSync(join(tmpdir(), 'schedule-svg-'));
  try {
    const file = join(folder, 'timeline.svg');
    const { out } = capture(parseSchedule(['--kind', 'interleaved', '--stages', '2', '--microbatches', '4', '--chunks', '2', '--svg', file]));
    assert.match(out, new RegExp(`wrote the timeline to ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\n$`));
    const svg = readFileSync(file, 'utf8');
    assert.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    assert.ok(svg.trimEnd().endsWith('</svg>'));
    const boxes = [...svg.matchAll(/<title>stage (\d) (forward|backward) micro-batch (\d+) chunk (\d+), t (\d+)-(\d+)<\/title><rect [^>]*fill="(#[0-9a-f]{6})"/g)];
    assert.equal(boxes.length, 2 * 2 * 4 * 2);
    const colours = new Map(boxes.map((box) => [box[2], box[7]]));
    assert.equal(colours.size, 2);
    assert.notEqual(colours.get('forward'), colours.get('backward'));
    for (const box of boxes) assert.equal(Number(box[6]) - Number(box[5]), box[2] === 'forward' ? 1 : 2, 'backward twice as long as forward');
    assert.ok(svg.includes('>0.1</text>'), 'boxes are labelled micro-batch.chunk');
    // With --json, stdout is only JSON and the note goes to stderr.
    const quiet = capture(parseSchedule(['--kind', 'gpipe', '--stages', '2', '--microbatches', '2', '--json', '--svg', file]));
    JSON.parse(quiet.out);
    assert.match(quiet.err, /wrote the timeline to/);
  } finally {
    rmSync(folder, { recursive: true, force: true });
  }
});

test('schedule - zb-h1 and zbv: zbv\'s chunks default to 2 (and no other count is taken); JSON lists W; the SVG draws W in a third colour', () => {
  assert.equal(parseSchedule(['--kind', 'zbv', '--stages', '4', '--microbatches', '8']).chunks, 2);
  assertUsage(['--kind', 'zbv', '--stages', '4', '--microbatches', '8', '--chunks', '3'], /zbv schedule runs exactly two model chunks per stage.*use chunks = 2/);
  assertUsage(['--kind', 'zb-h1', '--stages', '4', '--microbatches', '8', '--chunks', '2'], /zb-h1 schedule runs one model chunk per stage/);
  const json = JSON.parse(capture(parseSchedule(['--kind', 'zb-h1', '--stages', '2', '--microbatches', '2', '--json'])).out) as { ops: unknown[][] };
  assert.deepEqual(json, scheduleToJson(buildZeroBubbleH1(2, 2)));
  assert.deepEqual(json.ops[0], [['F', 0, 0], ['F', 1, 0], ['B', 0, 0], ['W', 0, 0], ['B', 1, 0], ['W', 1, 0]]);
  const chart = capture(parseSchedule(['--kind', 'zb-h1', '--stages', '4', '--microbatches', '8'])).out;
  assert.match(chart, /theoretical bubble: 0\.111 = \(p - 1\) \/ \(3 m \+ p - 1\)/);
  const folder = mkdtempSync(join(tmpdir(), 'schedule-svg-'));
  try {
    const file = join(folder, 'zbv.svg');
    capture(parseSchedule(['--kind', 'zbv', '--stages', '2', '--microbatches', '4', '--svg', file]));
    const svg = readFileSync(file, 'utf8');
    const boxes = [...svg.matchAll(/<title>stage (\d) (forward|backward-input|backward-weight) micro-batch (\d+) chunk (\d+), t (\d+)-(\d+)<\/title><rect [^>]*fill="(#[0-9a-f]{6})"/g)];
    assert.equal(boxes.length, 2 * 2 * 4 * 3);
    const colours = new Map(boxes.map((box) => [box[2], box[7]]));
    assert.equal(new Set(colours.values()).size, 3);
    for (const box of boxes) assert.equal(Number(box[6]) - Number(box[5]), 1, 'F, B and W one unit each (B and W half of the 2-unit backward)');
    assert.match(svg, /W: weight gradient/);
  } finally {
    rmSync(folder, { recursive: true, force: true });
  }
});

test('schedule - the real CLI prints JSON (exit 0) and refuses a bad interleaving (exit 2)', async () => {
  const good = await runCli(['schedule', '--kind', 'gpipe', '--stages', '2', '--microbatches', '2', '--json'], {}, 30_000);
  assert.equal(good.code, 0, good.output);
  assert.deepEqual(JSON.parse(good.output), { kind: 'gpipe', stages: 2, microbatches: 2, chunks: 1, ops: [[['F', 0, 0], ['F', 1, 0], ['B', 0, 0], ['B', 1, 0]], [['F', 0, 0], ['F', 1, 0], ['B', 0, 0], ['B', 1, 0]]] });
  const bad = await runCli(['schedule', '--kind', 'interleaved', '--stages', '4', '--microbatches', '6', '--chunks', '2'], {}, 30_000);
  assert.equal(bad.code, 2);
  assert.match(bad.output, /^gpt-hybrid: the interleaved schedule needs the micro-batches to be a multiple of the stages/);
});

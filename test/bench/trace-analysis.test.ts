// Tests: the bench's readings of a merged trace (exposed communication, bubbles, balance, counters) on
// hand-made timelines whose answers are known, and the figures' targets in the JSON and the table.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { TraceEvent } from '../../src/trace/trace.ts';
import { counterPeak, exposedCommFraction, pipelineShape, replayedBubble } from '../../bench/trace-analysis.ts';
import { meanBubble, measureBubbles } from '../../src/scheduler/measure.ts';
import { buildSchedule } from '../../src/scheduler/schedules.ts';
import { simulateTimeline } from '../../src/scheduler/timeline.ts';
import { reportJson, reportTable } from '../../bench/report.ts';
import { FIRST_MEASURED_STEP } from '../../bench/train-runs.ts';

/** A complete event in milliseconds (the trace stores microseconds); compute slices carry their op, as stage.ts records them. */
function span(pid: number, name: string, cat: string, startMs: number, endMs: number, args: Record<string, number> = {}): TraceEvent {
  const op: Record<string, string> = cat === 'compute' ? { op: name } : {};
  return { name, cat, ph: 'X', ts: startMs * 1000, dur: (endMs - startMs) * 1000, pid, tid: 0, args: { step: FIRST_MEASURED_STEP, ...op, ...args } };
}

// The first measured step of a two-stage pipeline, one micro-batch: rank 1 waits for rank 0's forward (not communication),
// then 30 ms for the activation in flight; rank 0 waits in the all-reduce until rank 1 joins at 230.
const step2: TraceEvent[] = [
  span(0, 'forward', 'compute', 0, 100, { microBatch: 0 }),
  span(0, 'send activation', 'comm', 100, 110, { microBatch: 0, to: 1 }),
  span(1, 'receive activation', 'comm', 0, 130, { microBatch: 0, from: 0 }),
  span(1, 'forward', 'compute', 130, 230, { microBatch: 0 }),
  span(0, 'all-reduce tied weights', 'comm', 110, 260),
  span(1, 'all-reduce tied weights', 'comm', 230, 260),
];
// Earlier steps pay one-time costs and are left out.
const step1 = [{ ...span(0, 'all-reduce tied weights', 'comm', -5000, -1000), args: { step: FIRST_MEASURED_STEP - 1 } }];

test('bench - exposed communication counts sends, receives after the send began, collectives after the last member joined', () => {
  const result = exposedCommFraction([...step1, ...step2]);
  assert.equal(result.stepMs, 260);
  // Rank 0: its send (10) + the all-reduce after rank 1 joined (30); rank 1: 30 in flight + 30.
  assert.ok(Math.abs(result.perRank[0] - 40 / 260) < 1e-12, String(result.perRank[0]));
  assert.ok(Math.abs(result.perRank[1] - 60 / 260) < 1e-12, String(result.perRank[1]));
  assert.equal(result.fraction, result.perRank[1]);
  assert.throws(() => exposedCommFraction(step1), new RegExp(`no events of step ${FIRST_MEASURED_STEP}`));
});

test('bench - pipeline bubbles in the step window, balance of the stages, and a counter peak', () => {
  const shape = pipelineShape(step2, 2);
  // Window 0-230 over compute: each stage busy 100 ms.
  assert.deepEqual(shape.busyMs, [100, 100]);
  assert.ok(Math.abs(shape.bubbles[0] - 130 / 230) < 1e-12);
  assert.ok(Math.abs(shape.bubble - 130 / 230) < 1e-12);
  assert.equal(shape.balanceBound, 2);
  const counters: TraceEvent[] = [10, 30, 20].map((bytes, i) => ({ name: 'saved activations', cat: 'counter', ph: 'C', ts: i, pid: 0, tid: 0, args: { bytes } }));
  assert.equal(counterPeak(counters, 'saved activations', 0, 'bytes'), 30);
  assert.equal(counterPeak(counters, 'saved activations', 1, 'bytes'), undefined);
});

test('bench - the replayed bubble keeps the ops\' times and drops the waits between them', () => {
  const schedule = buildSchedule('1f1b', 2, 4);
  const ideal = simulateTimeline(schedule, { forward: 10, backward: 20 });
  assert.ok(ideal.ok);
  // The same ops on a timeline where every message took 3 ms: each op starts later than it could.
  const delayed = ideal.events.map((e, i) => span(e.stage, e.kind === 'F' ? 'forward' : 'backward', 'compute', e.start + 3 * i, e.end + 3 * i, { microBatch: e.microBatch, chunk: e.chunk }));
  const replayed = replayedBubble(delayed, schedule);
  assert.ok(Math.abs(replayed - meanBubble(measureBubbles(ideal.events, 2))) < 1e-12, `${replayed}`);
  assert.ok(pipelineShape(delayed, 2).bubble > replayed);
});

test('bench - every figure in the JSON, targets flagged, a failed figure never met', () => {
  const figures = [
    { key: 'nats_gbps', value: 0.9, target: { op: '>=' as const, value: 0.8 } },
    { key: 'bubble_ratio', value: 1.3, target: { op: '<=' as const, value: 1.15 } },
    { key: 'tensor_growth', value: null, target: { op: '==' as const, value: 0 }, note: 'failed: boom' },
    { key: 'concurrency', value: 0.8 },
  ];
  const json = reportJson(figures, { quick: true });
  assert.deepEqual(Object.keys(json).slice(0, 4), ['nats_gbps', 'bubble_ratio', 'tensor_growth', 'concurrency']);
  assert.deepEqual(json.targets, {
    nats_gbps: { op: '>=', value: 0.8, met: true },
    bubble_ratio: { op: '<=', value: 1.15, met: false },
    tensor_growth: { op: '==', value: 0, met: false },
  });
  assert.equal(json.targets_met, 1);
  const table = reportTable(figures).split('\n');
  assert.match(table[2], /^bubble_ratio\s+1\.3\s+<= 1\.15\s+NOT met/);
  assert.match(table[3], /^tensor_growth\s+failed/);
});

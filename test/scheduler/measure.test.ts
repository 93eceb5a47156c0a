// Tests: the bubble and in-flight measurements the real pipeline runtime reuses on its own events.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildInterleaved, inFlightByOrder, measureBubbles, measureInFlight, meanBubble, simulateTimeline, type ComputeEvent } from '../../src/scheduler/schedules.ts';

const event = (stage: number, kind: 'F' | 'B', microBatch: number, start: number, end: number, chunk = 0): ComputeEvent => ({ stage, kind, microBatch, chunk, start, end });

test('measure - bubble is idle over the span shared by all stages; a stage that starts late is idle meanwhile', () => {
  const events = [event(0, 'F', 0, 0, 1), event(1, 'F', 0, 1, 2), event(1, 'B', 0, 2, 4), event(0, 'B', 0, 4, 6)];
  const bubbles = measureBubbles(events, 3);
  assert.deepEqual(bubbles.map((b) => [b.busy, b.idle, b.span]), [[3, 3, 6], [3, 3, 6], [0, 6, 6]]);
  assert.equal(bubbles[0]!.fraction, 0.5);
  assert.equal(bubbles[2]!.fraction, 1);
  assert.equal(meanBubble(bubbles), (0.5 + 0.5 + 1) / 3);
});

test('measure - overlapping intervals count once; a window clips them', () => {
  const events = [event(0, 'F', 0, 0, 4), event(0, 'F', 1, 2, 6), event(0, 'B', 0, 8, 10)];
  assert.equal(measureBubbles(events, 1)[0]!.busy, 8);
  const windowed = measureBubbles(events, 1, { start: 5, end: 9 })[0]!;
  assert.deepEqual([windowed.busy, windowed.span, windowed.fraction], [2, 4, 0.5]);
  assert.deepEqual(measureBubbles([], 2).map((b) => b.fraction), [0, 0]);
});

test('measure - in flight: from a forward\'s start to its backward\'s end; a backward ending as a forward starts frees first', () => {
  const events = [event(0, 'F', 0, 0, 1), event(0, 'F', 1, 1, 2), event(0, 'B', 0, 2, 3), event(0, 'F', 2, 3, 4), event(0, 'B', 1, 4, 5), event(0, 'B', 2, 5, 6)];
  assert.deepEqual(measureInFlight(events, 2), [2, 0]);
  assert.equal(inFlightByOrder(events), 2);
});

test('measure - for a simulated interleaved run, in flight by time equals in flight by order', () => {
  const schedule = buildInterleaved(4, 8, 2);
  const timeline = simulateTimeline(schedule);
  assert.ok(timeline.ok);
  assert.deepEqual(measureInFlight(timeline.events, 4), schedule.ops.map(inFlightByOrder));
  assert.deepEqual(schedule.ops.map(inFlightByOrder), [11, 9, 7, 5]);
});

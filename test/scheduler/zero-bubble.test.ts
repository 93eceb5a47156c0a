// Tests: the zero-bubble schedules zb-h1 and zbv as values: hand-checked orders, the split-backward
// rules for every P <= 8 and M <= 16 (each W after its B, each B after the next virtual stage's B,
// activations within 1F1B's first-stage peak), their simulated bubbles against the formulas and 1F1B's,
// the V placement, and the validator's verdict on a W out of place.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  build1F1B,
  buildSchedule,
  buildZeroBubbleH1,
  buildZeroBubbleV,
  dependencyOf,
  formatOp,
  inFlightByOrder,
  meanBubble,
  measureBubbles,
  parseOp,
  placeLayerRanges,
  placeOfVirtualStage,
  ScheduleError,
  ScheduleValidationError,
  simulateTimeline,
  theoreticalBubbleOf,
  validateSchedule,
  virtualStageOf,
  type PipelineOp,
  type Schedule,
} from '../../src/scheduler/schedules.ts';
import { zeroBubbleSchedules } from './helpers.ts';

const text = (ops: readonly PipelineOp[]) => ops.map(formatOp).join(' ');
const simulatedBubble = (schedule: Schedule) => {
  const timeline = simulateTimeline(schedule, { forward: 1, backward: 2 });
  assert.ok(timeline.ok);
  return meanBubble(measureBubbles(timeline.events, schedule.stages));
};

describe('zb-h1', () => {
  test('zb-h1 - 4 stages, 8 micro-batches: 1F1B\'s F and B order, stage r runs each W r steps behind its B', () => {
    const schedule = buildZeroBubbleH1(4, 8);
    assert.equal(text(schedule.ops[0]!), 'F0 F1 F2 F3 B0 W0 F4 B1 W1 F5 B2 W2 F6 B3 W3 F7 B4 W4 B5 W5 B6 W6 B7 W7');
    assert.equal(text(schedule.ops[3]!), 'F0 B0 F1 B1 F2 B2 F3 B3 W0 F4 B4 W1 F5 B5 W2 F6 B6 W3 F7 B7 W4 W5 W6 W7');
    const oneFOneB = build1F1B(4, 8);
    schedule.ops.forEach((stageOps, stage) => assert.equal(text(stageOps.filter((o) => o.kind !== 'W')), text(oneFOneB.ops[stage]!)));
  });

  test('zb-h1 - refuses chunks other than 1', () => {
    assert.throws(() => buildSchedule('zb-h1', 2, 4, 2), (e: unknown) => e instanceof ScheduleError && /runs one model chunk per stage/.test(e.message));
  });
});

describe('zbv', () => {
  test('zbv - the V placement: chunk 0 goes down the stages, chunk 1 comes back up', () => {
    assert.deepEqual([0, 1, 2, 3].map((stage) => [virtualStageOf(stage, 0, 4, 'v'), virtualStageOf(stage, 1, 4, 'v')]), [[0, 7], [1, 6], [2, 5], [3, 4]]);
    for (let virtual = 0; virtual < 8; virtual++) {
      const { stage, chunk } = placeOfVirtualStage(virtual, 4, 'v');
      assert.equal(virtualStageOf(stage, chunk, 4, 'v'), virtual);
    }
    // The last stage's chunk 0 feeds its own chunk 1; chunk 1's backward goes up to the stage below.
    assert.deepEqual(dependencyOf(parseOp('F2.1'), 3, 4, 2, 'v'), { stage: 3, op: parseOp('F2') });
    assert.deepEqual(dependencyOf(parseOp('F2.1'), 1, 4, 2, 'v'), { stage: 2, op: parseOp('F2.1') });
    assert.deepEqual(dependencyOf(parseOp('B2.1'), 0, 4, 2, 'v'), { stage: 0, op: parseOp('F2.1') });
    assert.deepEqual(dependencyOf(parseOp('B2'), 3, 4, 2, 'v'), { stage: 3, op: parseOp('B2.1') });
    assert.deepEqual(dependencyOf(parseOp('W2'), 3, 4, 2, 'v'), { stage: 3, op: parseOp('B2') });
    // Stage 0 holds the first and the last layers.
    assert.deepEqual(placeLayerRanges([[[0, 1], [4, 5]], [[1, 2], [5, 6]], [[2, 3], [6, 7]], [[3, 4], [7, 8]]], 'v'), [[[0, 1], [7, 8]], [[1, 2], [6, 7]], [[2, 3], [5, 6]], [[3, 4], [4, 5]]]);
  });

  test('zbv - 2 stages, 4 micro-batches, by hand: the last stage turns each micro-batch around at once', () => {
    const schedule = buildZeroBubbleV(2, 4);
    assert.equal(text(schedule.ops[0]!), 'F0 F1 F2 F0.1 B0.1 W0.1 F1.1 B1.1 W1.1 F3 B0 W0 F2.1 B2.1 W2.1 B1 W1 F3.1 B3.1 W3.1 B2 W2 B3 W3');
    assert.equal(text(schedule.ops[1]!), 'F0 F0.1 F1 F1.1 B0.1 W0.1 F2 B0 W0 F2.1 B1.1 W1.1 F3 B1 W1 F3.1 B2.1 W2.1 B2 B3.1 B3 W2 W3.1 W3');
  });

  test('zbv - needs exactly two chunks, with an error that says so', () => {
    for (const chunks of [1, 3]) {
      assert.throws(() => buildSchedule('zbv', 2, 4, chunks), (e: unknown) => e instanceof ScheduleError && /exactly two model chunks per stage.*use chunks = 2/.test(e.message));
    }
  });
});

describe('both', () => {
  test('zero bubble - every P <= 8, M <= 16: valid (each W after its B, each B after the next virtual stage\'s, no deadlock), within 1F1B\'s first-stage activations', () => {
    let count = 0;
    for (const schedule of zeroBubbleSchedules()) {
      validateSchedule(schedule);
      const { stages, microBatches } = schedule;
      const timeline = simulateTimeline(schedule, { forward: 1, backward: 2 });
      assert.ok(timeline.ok);
      const end = new Map(timeline.events.map((e) => [`${e.stage}:${formatOp(e)}`, e.end]));
      const place = (stage: number, chunk: number) => virtualStageOf(stage, chunk, stages, schedule.kind === 'zbv' ? 'v' : 'looped');
      for (const event of timeline.events) {
        if (event.kind === 'W') assert.ok(end.get(`${event.stage}:${formatOp({ ...event, kind: 'B' })}`)! <= event.start, `${schedule.kind} P=${stages} M=${microBatches}: W before its B`);
        if (event.kind !== 'B' || place(event.stage, event.chunk) === stages * schedule.chunks - 1) continue;
        const next = placeOfVirtualStage(place(event.stage, event.chunk) + 1, stages, schedule.kind === 'zbv' ? 'v' : 'looped');
        assert.ok(end.get(`${next.stage}:${formatOp({ kind: 'B', microBatch: event.microBatch, chunk: next.chunk })}`)! <= event.start);
      }
      const perStage = schedule.kind === 'zb-h1' ? 1 : 2;
      schedule.ops.forEach((stageOps) => assert.ok(inFlightByOrder(stageOps) <= perStage * Math.min(stages, microBatches), `${schedule.kind} P=${stages} M=${microBatches}`));
      count++;
    }
    assert.equal(count, 2 * 8 * 16);
  });

  test('zero bubble - the simulated bubble (B and W half a backward each) is the formula\'s and below 1F1B\'s', () => {
    for (let stages = 2; stages <= 8; stages++) {
      for (let microBatches = stages; microBatches <= 16; microBatches++) {
        const oneFOneB = simulatedBubble(build1F1B(stages, microBatches));
        const h1 = simulatedBubble(buildZeroBubbleH1(stages, microBatches));
        assert.ok(Math.abs(h1 - theoreticalBubbleOf('zb-h1', stages, microBatches)) < 1e-12, `zb-h1 P=${stages} M=${microBatches}: ${h1}`);
        assert.ok(h1 < oneFOneB / 2, `zb-h1 P=${stages} M=${microBatches}: ${h1} vs 1f1b ${oneFOneB}`);
        const v = simulatedBubble(buildZeroBubbleV(stages, microBatches));
        assert.ok(v <= h1, `zbv P=${stages} M=${microBatches}: ${v} vs zb-h1 ${h1}`);
        if (microBatches >= 2 * stages - 1) assert.ok(Math.abs(v - theoreticalBubbleOf('zbv', stages, microBatches, 2)) < 1e-12, `zbv P=${stages} M=${microBatches}: ${v}`);
      }
    }
  });

  test('validate - a W before its B, a missing W, and a stage over its activation bound are named', () => {
    const schedule = buildZeroBubbleH1(2, 2);
    assert.equal(text(schedule.ops[0]!), 'F0 F1 B0 W0 B1 W1');
    const swapped = [['F0', 'F1', 'W0', 'B0', 'B1', 'W1'].map(parseOp), schedule.ops[1]!];
    assert.throws(() => validateSchedule({ ...schedule, ops: swapped }), (e: unknown) => e instanceof ScheduleValidationError && /stage 0 step 2: W0 comes before its B \(step 3\)/.test(e.message));
    const missing = schedule.ops.map((ops, stage) => (stage === 0 ? ops.filter((o) => !(o.kind === 'W' && o.microBatch === 1)) : ops));
    assert.throws(() => validateSchedule({ ...schedule, ops: missing }), /stage 0 never runs W1/);
    const greedy: Schedule = { ...schedule, ops: [['F0', 'F1', 'B0', 'B1', 'W0', 'W1'].map(parseOp), schedule.ops[1]!] };
    validateSchedule(greedy);
    const hoarding: Schedule = { ...buildZeroBubbleH1(2, 4), ops: [['F0', 'F1', 'F2', 'B0', 'F3', 'B1', 'B2', 'B3', 'W0', 'W1', 'W2', 'W3'].map(parseOp), buildZeroBubbleH1(2, 4).ops[1]!] };
    assert.throws(() => validateSchedule(hoarding), /stage 0 holds the activations of 4 \(micro-batch, chunk\) pairs at once, more than the 2 the zb-h1 schedule allows/);
  });
});

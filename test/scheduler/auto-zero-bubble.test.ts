// Tests: auto-zb as a value: valid (every op once, W after its B, zb-h1's memory bound, no deadlock)
// and never slower than zb-h1 under the costs it was placed for, equal or not; with the bench's stage
// times, at zb-h1's simulated step, which is the memory bound's floor there; well below zb-h1 where the
// stages' B and W differ so that fixed W slots idle; deterministic; bad costs refused.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  buildSchedule,
  buildZeroBubbleH1,
  formatOp,
  inFlightByOrder,
  planAutoZeroBubble,
  ScheduleError,
  simulateTimeline,
  theoreticalBubbleOf,
  validateSchedule,
  type StageCosts,
} from '../../src/scheduler/schedules.ts';
import { durationsOfCosts, simulatedBubble } from '../../src/scheduler/auto-zero-bubble.ts';

const costs = (forward: number, backwardInput: number, backwardWeight: number): StageCosts => ({ forward, backwardInput, backwardWeight });

function makespanOf(schedule: Parameters<typeof simulateTimeline>[0], stageCosts: readonly StageCosts[]): number {
  const timeline = simulateTimeline(schedule, stageCosts.map(durationsOfCosts));
  assert.ok(timeline.ok);
  return timeline.makespan;
}

describe('auto-zb', () => {
  test('auto-zb - equal F, B and W: valid for every P <= 6 and M <= 12, never slower than zb-h1, within its bubble formula once M >= P', () => {
    for (let stages = 1; stages <= 6; stages++) {
      for (let microBatches = 1; microBatches <= 12; microBatches++) {
        const schedule = validateSchedule(buildSchedule('auto-zb', stages, microBatches));
        assert.equal(schedule.kind, 'auto-zb');
        const equal = Array.from({ length: stages }, () => costs(1, 1, 1));
        assert.ok(makespanOf(schedule, equal) <= makespanOf(buildZeroBubbleH1(stages, microBatches), equal), `P=${stages} M=${microBatches}`);
        schedule.ops.forEach((ops) => assert.ok(inFlightByOrder(ops) <= Math.min(stages, microBatches)));
        if (microBatches >= stages) assert.ok(simulatedBubble(schedule, equal) <= theoreticalBubbleOf('zb-h1', stages, microBatches) + 1e-12, `P=${stages} M=${microBatches}`);
      }
    }
  });

  test('auto-zb - the bench\'s pp2 stage times (F 185 / 405 ms, B and W 212.5 / 82.5): zb-h1\'s step, the floor of P micro-batches in flight', () => {
    const bench = [costs(185, 212.5, 212.5), costs(405, 82.5, 82.5)];
    const plan = planAutoZeroBubble(2, 8, bench);
    validateSchedule(plan.schedule);
    // Stage 0 computes 8 x 610 ms. Holding 2 forwards it waits from 370 ms to 672.5 (stage 1's F0 and B0)
    // for its first B, and its last B waits 487.5 ms after its last F (F7 and B7 on stage 1) with only B6
    // and W6 (425 ms) left to fill it: 4880 + 302.5 + 62.5. No order within the memory bound does better.
    assert.equal(plan.makespan, 5245);
    assert.equal(plan.makespan, makespanOf(buildZeroBubbleH1(2, 8), bench));
    assert.ok(plan.bubble <= plan.zeroBubbleH1Bubble);
  });

  test('auto-zb - stages whose B is short and W long: the W\'s placed from the times leave well under zb-h1\'s bubble', () => {
    const cases = [
      { stageCosts: [costs(200, 50, 150), costs(100, 50, 200)], ratio: 0.7 },
      { stageCosts: [costs(250, 50, 100), costs(300, 50, 100), costs(200, 50, 150)], ratio: 0.8 },
    ];
    for (const { stageCosts, ratio } of cases) {
      const plan = planAutoZeroBubble(stageCosts.length, 8, stageCosts);
      validateSchedule(plan.schedule);
      assert.notEqual(plan.variant, 'zb-h1');
      assert.ok(plan.bubble < ratio * plan.zeroBubbleH1Bubble, `${plan.bubble} vs zb-h1's ${plan.zeroBubbleH1Bubble}`);
      assert.equal(plan.bubble, simulatedBubble(plan.schedule, stageCosts));
    }
  });

  test('auto-zb - random stage times: valid, never slower than zb-h1, the same order for the same times', () => {
    let seed = 12345;
    const random = () => (seed = (seed * 16807) % 2147483647) / 2147483647;
    for (let trial = 0; trial < 60; trial++) {
      const stages = 2 + Math.floor(random() * 3);
      const microBatches = 1 + Math.floor(random() * 12);
      const stageCosts = Array.from({ length: stages }, () => costs(10 + random() * 400, 10 + random() * 300, 10 + random() * 300));
      const plan = planAutoZeroBubble(stages, microBatches, stageCosts);
      validateSchedule(plan.schedule);
      assert.ok(plan.makespan <= makespanOf(buildZeroBubbleH1(stages, microBatches), stageCosts) + 1e-9);
      const again = planAutoZeroBubble(stages, microBatches, stageCosts);
      assert.deepEqual(again.schedule.ops.map((ops) => ops.map(formatOp)), plan.schedule.ops.map((ops) => ops.map(formatOp)));
    }
  });

  test('auto-zb - refuses a cost list of the wrong length, a time that is not positive, and chunks other than 1', () => {
    assert.throws(() => planAutoZeroBubble(2, 4, [costs(1, 1, 1)]), (e: unknown) => e instanceof ScheduleError && /all 2 stages, got 1/.test(e.message));
    assert.throws(() => planAutoZeroBubble(2, 4, [costs(1, 1, 1), costs(1, 0, 1)]), (e: unknown) => e instanceof ScheduleError && /stage 1's backwardInput time must be a positive number/.test(e.message));
    assert.throws(() => buildSchedule('auto-zb', 2, 4, 2), (e: unknown) => e instanceof ScheduleError && /runs one model chunk per stage/.test(e.message));
  });

  test('simulateTimeline - one set of durations per stage, as many as the stages', () => {
    const schedule = buildZeroBubbleH1(2, 2);
    assert.equal(makespanOf(schedule, [costs(1, 1, 1), costs(1, 1, 1)]), makespanOf(schedule, [costs(1, 1, 1), costs(1, 1, 1)]));
    assert.throws(() => simulateTimeline(schedule, [durationsOfCosts(costs(1, 1, 1))]), /durations for 1 stages, but the schedule has 2/);
  });
});
